package cli

import (
	"fmt"
	"io"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// writeBackupStatus prints the backup lines of `factory status`: the last
// good backup's age and path, the schedule, the last attempt when it
// failed, and a warning when the last good backup is stale.
func writeBackupStatus(w io.Writer, b *factoryv1.GetBackupStatusResponse) {
	if b == nil {
		fmt.Fprintf(w, "Last good backup:\tn/a\n")
		return
	}
	every := b.GetEvery().AsDuration()
	schedule := "no schedule (factory-controlplane --backup-every)"
	if every > 0 {
		schedule = fmt.Sprintf("every %s, keep %s", humanDuration(every), b.GetKeep())
	}
	if g := b.GetLastGood(); g != nil {
		fmt.Fprintf(w, "Last good backup:\t%s ago: %s (%s; %s)\n", humanDuration(b.GetAge().AsDuration().Round(time.Second)),
			escapeTerminal(g.GetPath()), byteSize(g.GetBytes()), schedule)
	} else {
		fmt.Fprintf(w, "Last good backup:\tnone (%s)\n", schedule)
	}
	if l := b.GetLast(); l != nil && !l.GetVerified() {
		fmt.Fprintf(w, "\tlast attempt FAILED at %s: %s (%d failed in all)\n", l.GetStartedAt().AsTime().Format(time.RFC3339),
			escapeTerminal(truncate(l.GetError(), 160)), b.GetFailures())
	}
	if b.GetStale() {
		fmt.Fprintf(w, "\tWARNING: stale: no good backup for %s, over twice the %s interval\n",
			humanDuration(b.GetAge().AsDuration().Round(time.Second)), humanDuration(every))
	}
}
