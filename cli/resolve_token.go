package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// tokenLookupPage is the page size of a token lookup: the most ListTokens
// gives in one page.
const tokenLookupPage = 1000

// tokenLookupLimit bounds how many tokens a lookup reads. A factory has
// tens of tokens; a list longer than this is not worth paging through on
// every revoke, and a whole id needs no lookup.
const tokenLookupLimit = 10000

// resolveTokenID is resolveTaskID for tokens. ListTokens takes no id
// prefix, and tokens are few, so the lookup reads the list and matches
// here. Revoked and expired tokens are matched too: a prefix must name
// the same token whether or not it still works, as ls --all shows it, and
// revoking twice is harmless.
func resolveTokenID(ctx context.Context, c factoryv1.AccessServiceClient, arg string) (string, error) {
	if !needsLookup(arg) {
		return arg, nil
	}
	now := time.Now()
	var matches []idMatch
	page, read := "", 0
	for pages := 1; ; pages++ {
		resp, err := c.ListTokens(ctx, &factoryv1.ListTokensRequest{IncludeInactive: true, PageSize: tokenLookupPage, PageToken: page})
		if lookupRefused(err) {
			return arg, nil
		}
		if err != nil {
			return "", fmt.Errorf("look up token id %s: %w", arg, err)
		}
		for _, t := range resp.GetTokens() {
			if t.GetId() == arg {
				return arg, nil
			}
			if strings.HasPrefix(t.GetId(), arg) {
				matches = append(matches, tokenIDMatch(t, now))
			}
		}
		read += len(resp.GetTokens())
		if page = resp.GetNextPageToken(); page == "" {
			break
		}
		// Counting pages too stops a server that pages without tokens.
		if read >= tokenLookupLimit || pages >= tokenLookupLimit {
			return "", fmt.Errorf("look up token id %s: more than %d tokens to search; give the whole id", arg, tokenLookupLimit)
		}
	}
	more := len(matches) > idCandidates
	if more {
		matches = matches[:idCandidates]
	}
	id, _, err := pickID("token", arg, matches, more)
	return id, err
}

// tokenIDMatch is a token as an ambiguous prefix lists it: its role (and
// whether it still works), who holds it and what it is for.
func tokenIDMatch(t *factoryv1.Token, now time.Time) idMatch {
	state := roleName(t.GetRole())
	if s := tokenStatus(t, now); s != "active" {
		state += ", " + s
	}
	what := t.GetSubject()
	if d := t.GetDescription(); d != "" {
		what += ": " + d
	}
	return idMatch{id: t.GetId(), state: state, what: what}
}
