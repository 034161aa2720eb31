package console_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestEventStreamEndsWhenItsTokenIsRevoked: a page's open /events stream
// does not outlive the session's parent token: revoking it ends the stream
// with a signout event, so the page goes to the sign-in page instead of
// hearing about the factory with a token that no longer works.
func TestEventStreamEndsWhenItsTokenIsRevoked(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)
	parentID, parent := f.token(t, factoryv1.Role_ROLE_OPERATOR, "carol")
	c, _ := secSignedIn(t, f, parent)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/events?topics=tasks,approvals", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events signed in: %d, want 200", resp.StatusCode)
	}
	lines := bufio.NewScanner(resp.Body)
	waitFor := func(event string) {
		t.Helper()
		for lines.Scan() {
			if lines.Text() == "event: "+event {
				return
			}
		}
		t.Fatalf("the stream ended without %q: %v", event, lines.Err())
	}
	waitFor("ready")
	if _, err := op.access.RevokeToken(context.Background(), &factoryv1.RevokeTokenRequest{TokenId: parentID}); err != nil {
		t.Fatal(err)
	}
	waitFor("signout")
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "event: ") {
			t.Errorf("after signout the stream sent %q", lines.Text())
		}
	}
}
