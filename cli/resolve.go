package cli

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Ids may be shortened wherever a command takes one, as git takes a short
// commit hash: "task move 0193a2b4 --to done". A whole UUID is used as
// it is; anything else is looked up by prefix, and the lookup must name
// exactly one id. An id that exists as typed wins over longer ids it
// begins (a task created with --id deploy, beside deploy-api).

// idCandidates is how many ids a lookup asks for: one is the answer, more
// are an ambiguity worth showing, and a handful is enough to show it.
const idCandidates = 6

// idPrefixPattern is what ListTasksRequest.id_prefix and
// ListApprovalsRequest.id_prefix accept: the characters of an id.
var idPrefixPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// wholeUUID reports whether s is a complete UUID in the canonical form
// the server writes, which needs no lookup.
func wholeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// needsLookup reports whether arg is to be resolved by prefix. A whole
// UUID is not, nor text that cannot be an id: the call it is passed to
// refuses that with the field named.
func needsLookup(arg string) bool {
	return !wholeUUID(arg) && idPrefixPattern.MatchString(arg)
}

// lookupRefused reports whether the server will not list ids to this
// caller (a server without the list, a caller that may not list): the id
// then goes as typed, and the call it is for says whether it exists.
func lookupRefused(err error) bool {
	return isCode(err, codes.Unimplemented) || isCode(err, codes.PermissionDenied)
}

// idMatch is one id a prefix matched, with what a person needs to pick
// between several: its state and what it is.
type idMatch struct {
	id, state, what string
}

// pickID chooses among the ids a lookup of arg returned. A server that
// predates id_prefix ignores it and lists ids that do not start with arg:
// then arg goes as typed, as it did before prefixes, rather than have the
// CLI act on the wrong id.
func pickID(noun, arg string, found []idMatch, more bool) (id string, ambiguous bool, err error) {
	var matches []idMatch
	for _, m := range found {
		if m.id == arg || !strings.HasPrefix(m.id, arg) {
			return arg, false, nil
		}
		matches = append(matches, m)
	}
	switch len(matches) {
	case 0:
		return "", false, status.Errorf(codes.NotFound, "no %s id starts with %s", noun, arg)
	case 1:
		return matches[0].id, false, nil
	}
	return "", true, ambiguousIDError(noun, arg, matches, more)
}

// ambiguousIDError lists the ids that arg begins, so that the next try
// can name one.
func ambiguousIDError(noun, arg string, matches []idMatch, more bool) error {
	var b strings.Builder
	count := strconv.Itoa(len(matches))
	if more {
		count = "more than " + count
	}
	fmt.Fprintf(&b, "%s id %s is ambiguous: %s %ss start with it; give more of the id:\n", noun, arg, count, noun)
	t := newTable(&b)
	for _, m := range matches {
		fmt.Fprintf(t, "  %s\t%s\t%s\n", m.id, m.state, escapeTerminal(truncate(m.what, 60)))
	}
	_ = t.Flush()
	return errors.New(strings.TrimRight(b.String(), "\n"))
}

// resolveTaskID turns a task id as typed into the task's whole id (see
// the top of this file); it costs one small ListTasks call unless arg is
// a whole UUID.
func resolveTaskID(ctx context.Context, q factoryv1.QueueServiceClient, arg string) (string, error) {
	list := func() ([]idMatch, bool, error) {
		resp, err := q.ListTasks(ctx, &factoryv1.ListTasksRequest{IdPrefix: arg, PageSize: idCandidates})
		found := make([]idMatch, len(resp.GetTasks()))
		for i, t := range resp.GetTasks() {
			found[i] = idMatch{id: t.GetId(), state: stateLabel(t.GetState()), what: t.GetTitle()}
		}
		return found, resp.GetNextPageToken() != "", err
	}
	exists := func() bool {
		_, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: arg})
		return err == nil
	}
	return resolveByPrefix("task", arg, list, exists)
}

// resolveTaskIDs resolves each of ids (a repeatable flag's values).
func resolveTaskIDs(ctx context.Context, q factoryv1.QueueServiceClient, ids []string) error {
	for i, arg := range ids {
		id, err := resolveTaskID(ctx, q, arg)
		if err != nil {
			return err
		}
		ids[i] = id
	}
	return nil
}

// resolveApprovalID is resolveTaskID for approval requests.
func resolveApprovalID(ctx context.Context, c factoryv1.ApprovalServiceClient, arg string) (string, error) {
	list := func() ([]idMatch, bool, error) {
		resp, err := c.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{IdPrefix: arg, PageSize: idCandidates})
		found := make([]idMatch, len(resp.GetApprovals()))
		for i, ap := range resp.GetApprovals() {
			found[i] = idMatch{id: ap.GetId(), state: approvalStateName(ap.GetState()), what: ap.GetWhat()}
		}
		return found, resp.GetNextPageToken() != "", err
	}
	exists := func() bool {
		_, err := c.GetApproval(ctx, &factoryv1.GetApprovalRequest{ApprovalId: arg})
		return err == nil
	}
	return resolveByPrefix("approval", arg, list, exists)
}

// resolveByPrefix is the lookup resolveTaskID and resolveApprovalID share.
// list returns the ids that arg begins (at most a page of idCandidates)
// and whether there are more; exists asks whether arg itself is an id,
// which a full page of longer ids can hide.
func resolveByPrefix(noun, arg string, list func() ([]idMatch, bool, error), exists func() bool) (string, error) {
	if !needsLookup(arg) {
		return arg, nil
	}
	found, more, err := list()
	if lookupRefused(err) {
		return arg, nil
	}
	if err != nil {
		return "", fmt.Errorf("look up %s id %s: %w", noun, arg, err)
	}
	id, ambiguous, err := pickID(noun, arg, found, more)
	if ambiguous && more && exists() {
		return arg, nil
	}
	return id, err
}
