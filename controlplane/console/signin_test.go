package console_test

import (
	"net/http"
	"testing"
)

// TestSignInLinkWorksOnce: the link `make run` prints signs in, once.
func TestSignInLinkWorksOnce(t *testing.T) {
	f := startFactory(t, nil)
	if f.SignInPath == "" {
		t.Fatal("a console on loopback gave no sign-in link")
	}
	c := client(t)
	resp, err := c.Get(f.URL + f.SignInPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("link: %d %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = c.Get(f.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("overview after the link: %d, want 200", resp.StatusCode)
	}
	again, err := client(t).Get(f.URL + f.SignInPath)
	if err != nil {
		t.Fatal(err)
	}
	again.Body.Close()
	if again.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the link's second use: %d, want 401", again.StatusCode)
	}
}
