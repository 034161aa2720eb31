package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newAuditCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log: who changed what",
		Long: `The audit log records every change made by an operator, every call made on
another party's behalf, and every call refused for lack of permission:
who (subject, role, token), which RPC, on what (a task, a token or the
queue), the state before and after, the trace id and the outcome. Agents'
own claims, renewals and completions are not recorded: the queue's state
already tells that story. Reading it needs an operator token.

Identical refusals from one caller (same token, RPC, target and reason)
within the control plane's --audit-window (1m) share one entry: COUNT is
how many calls it stands for, TIME the first and LAST SEEN the last. Entries
last seen longer ago than --audit-retention (90 days) are deleted.`,
		Example: `  factory audit ls --since 24h
  factory audit ls --who forge --limit 20
  factory audit ls --since 2031-03-14T09:00:00Z -o json | jq '.[] | select(.outcome != "OK")'`,
	}
	cmd.AddCommand(newAuditListCommand(a))
	return cmd
}

// parseSince reads a time span back from now ("24h", "7d", "90m") or a
// point in time (RFC 3339).
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither a span back from now (24h, 7d) nor an RFC 3339 time", s)
	}
	return now.Add(-d), nil
}

func newAuditListCommand(a *app) *cobra.Command {
	var (
		since, who, target string
		limit              int
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List audit entries, newest first",
		Long: `Ls lists audit entries, newest first, at most --limit of them. --since
keeps entries from a span back from now (24h, 7d, 90m) or from an RFC 3339
time (an entry standing for several calls counts from its last one);
--who keeps one caller's, by subject (an agent, a host, an operator's
name) or by token id; --target keeps what was done to one thing, as the
TARGET column shows it: a task id (the task's history), a token id,
"queue", "agent forge".

The CHANGE column shows the fields that changed (state READY→FAILED); for
a refused call it shows why. -o json has the full before and after states
and the trace id.`,
		Example: `  factory audit ls --since 24h
  factory audit ls --since 7d --who forge
  factory audit ls --target 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b
  factory audit ls --limit 500 -o json > audit.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return usageErrorf("--since: %v", err)
			}
			if limit <= 0 {
				return usageErrorf("--limit must be positive")
			}
			req := &factoryv1.ListAuditRequest{Who: who, Target: target}
			if !from.IsZero() {
				req.Since = timestamppb.New(from)
			}
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				var entries []*factoryv1.AuditEntry
				for len(entries) < limit {
					req.PageSize = int32(min(limit-len(entries), 1000))
					resp, err := c.ListAudit(ctx, req)
					if err != nil {
						return err
					}
					entries = append(entries, resp.GetEntries()...)
					if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
						break
					}
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), entries)
				}
				return writeAuditTable(a.stdout(), entries)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only entries from this span back from now (24h, 7d) or this RFC 3339 time")
	f.StringVar(&who, "who", "", "only entries by this subject or token id")
	f.StringVar(&target, "target", "", "only entries on this target: a task id, a token id or queue")
	f.IntVar(&limit, "limit", 100, "at most this many entries")
	return cmd
}

func writeAuditTable(w io.Writer, entries []*factoryv1.AuditEntry) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tLAST SEEN\tCOUNT\tWHO\tROLE\tRPC\tTARGET\tOUTCOME\tCHANGE")
	for _, e := range entries {
		change := e.GetDetail()
		if change == "" {
			change = describeChange(e.GetBeforeJson(), e.GetAfterJson())
		}
		first := e.GetTime().AsTime().UTC()
		count, last := max(e.GetCount(), 1), "-"
		if ls := e.GetLastSeen(); ls != nil && ls.AsTime().After(first) {
			last = ls.AsTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", first.Format(time.RFC3339), last, count, e.GetWho(), roleName(e.GetRole()),
			path.Base(e.GetRpc()), orDash(e.GetTarget()), e.GetOutcome(), orDash(truncate(change, 80)))
	}
	return tw.Flush()
}

// describeChange lists the fields that differ between two JSON objects,
// "state READY→FAILED, priority 0→5"; with no before state, the after
// state's fields.
func describeChange(before, after string) string {
	var b, a map[string]any
	_ = json.Unmarshal([]byte(before), &b)
	if json.Unmarshal([]byte(after), &a) != nil || a == nil {
		return ""
	}
	keys := slices.Sorted(maps.Keys(a))
	var parts []string
	for _, k := range keys {
		av := jsonText(a[k])
		bv, had := b[k]
		switch {
		case b == nil:
			parts = append(parts, k+" "+av)
		case !had:
			parts = append(parts, k+" →"+av)
		case jsonText(bv) != av:
			parts = append(parts, k+" "+jsonText(bv)+"→"+av)
		}
	}
	return strings.Join(parts, ", ")
}

func jsonText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
