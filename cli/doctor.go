package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newDoctorCommand(a *app) *cobra.Command {
	var vacuum bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Run the control plane's integrity checks",
		Long: `Doctor asks the control plane to check itself:

  store_integrity    SQLite: PRAGMA integrity_check; PostgreSQL: a round trip
  migration_version  the schema's version against the binary's latest
  queue_sanity       every IN_PROGRESS task holds a live lease
  clock_skew         each connected sidecar's clock against the server's

With --vacuum it also compacts the store and refreshes the planner's
statistics (runbook §11.3, monthly): SQLite VACUUM, ANALYZE and PRAGMA
optimize; PostgreSQL VACUUM (ANALYZE) of each of the store's tables,
outside any transaction. The vacuum check reports the size before and
after and the time taken. The control plane keeps serving meanwhile, but
writes wait while SQLite rewrites the file: run it in a quiet hour.

It exits 1 when a check fails (warnings alone exit 0).`,
		Example: `  factory doctor
  factory doctor --vacuum
  factory doctor -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.Doctor(ctx, &factoryv1.DoctorRequest{Vacuum: vacuum})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					if err := writeProto(a.stdout(), resp); err != nil {
						return err
					}
				} else {
					tw := newTable(a.stdout())
					fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
					for _, ch := range resp.GetChecks() {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", ch.GetName(), doctorStatusName(ch.GetStatus()), ch.GetDetail())
					}
					if err := tw.Flush(); err != nil {
						return err
					}
				}
				var failed []string
				for _, ch := range resp.GetChecks() {
					if ch.GetStatus() == factoryv1.DoctorStatus_DOCTOR_STATUS_FAIL {
						failed = append(failed, ch.GetName())
					}
				}
				if len(failed) > 0 {
					return &runError{err: fmt.Errorf("doctor: %s failed", strings.Join(failed, ", "))}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&vacuum, "vacuum", false, "also VACUUM and ANALYZE the store, reporting its size before and after")
	return cmd
}

func doctorStatusName(s factoryv1.DoctorStatus) string {
	switch s {
	case factoryv1.DoctorStatus_DOCTOR_STATUS_OK:
		return "ok"
	case factoryv1.DoctorStatus_DOCTOR_STATUS_WARN:
		return "WARN"
	case factoryv1.DoctorStatus_DOCTOR_STATUS_FAIL:
		return "FAIL"
	}
	return "?"
}
