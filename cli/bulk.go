package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// bulkHelp follows each bulk verb's own help.
const bulkHelp = `

With --filter the verb applies to every task the filter selects, in one
call that changes all of them or none (at most 10000; more is refused,
saying how many match). Tasks the move is not allowed from (DONE, for
example) are left as they are and counted per state. --dry-run shows what
would change and changes nothing; "task ls --filter" with the same filter
lists the same tasks. An empty filter is refused. The call is audited once,
with the filter and the count.

` + filterHelp

// bulkArgs accepts args for the one-task form, none with --filter.
func bulkArgs(ff *filterFlags, one cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if ff.set() {
			if len(args) > 0 {
				return usageErrorf("give a task id or --filter, not both")
			}
			return nil
		}
		return one(cmd, args)
	}
}

// bulkUpdate runs BulkUpdateTasks with the --filter of a bulk verb and
// prints what changed (or would).
func (a *app) bulkUpdate(cmd *cobra.Command, ff *filterFlags, verb string, req *factoryv1.BulkUpdateTasksRequest) error {
	f, err := ff.required(verb)
	if err != nil {
		return err
	}
	req.Filter = f
	return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
		resp, err := q.BulkUpdateTasks(ctx, req)
		if err != nil {
			return err
		}
		if a.jsonOutput() {
			return writeProto(a.stdout(), resp)
		}
		done := verb + "ed"
		if strings.HasSuffix(verb, "e") {
			done = verb + "d"
		}
		if resp.GetDryRun() {
			done = "would " + verb
		}
		fmt.Fprintf(a.stderr(), "%s %d task(s) of %d matching %s", done, resp.GetChanged(), resp.GetMatched(), formatFilter(f))
		if len(resp.GetSkipped()) > 0 {
			parts := make([]string, len(resp.GetSkipped()))
			for i, s := range resp.GetSkipped() {
				parts[i] = fmt.Sprintf("%s %d", stateLabel(s.GetState()), s.GetCount())
			}
			fmt.Fprintf(a.stderr(), "; left as they are (move not allowed): %s", strings.Join(parts, ", "))
		}
		if resp.GetPromoted() > 0 {
			fmt.Fprintf(a.stderr(), "; %d dependent(s) promoted", resp.GetPromoted())
		}
		fmt.Fprintln(a.stderr())
		if len(resp.GetTasks()) == 0 {
			return nil
		}
		return writeTaskTable(a.stdout(), resp.GetTasks(), time.Now())
	})
}

// bulkMove is the request of a bulk move to state.
func bulkMove(to factoryv1.TaskState, reason string, dryRun bool) *factoryv1.BulkUpdateTasksRequest {
	return &factoryv1.BulkUpdateTasksRequest{Change: &factoryv1.BulkUpdateTasksRequest_To{To: to}, Reason: reason, DryRun: dryRun}
}
