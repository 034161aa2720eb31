package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newNodesUndrainCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "undrain HOST",
		Short: "Undo a drain: the host's agents may claim work, and agents be placed on it, again",
		Long: `Undrain tells the host's sidecar that the host is no longer drained: the
DRAINED mark leaves ` + "`factory nodes`" + `, the sidecar stops repeating it on
reconnect, and agents may be placed on the host again (a drained host
takes no placement). The sidecar must be connected. Operators only; the
call is audited.`,
		Example: `  factory nodes undrain gpu-1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.sendCommand(cmd, &factoryv1.SendCommandRequest{Host: args[0],
				Command: &factoryv1.SendCommandRequest_Undrain{Undrain: &factoryv1.UndrainHost{}}}, 30*time.Second)
		},
	}
}

func newNodesForgetCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "forget HOST",
		Short: "Forget a host that is gone: its readings, agents and placements",
		Long: `Forget removes a host that is gone for good (decommissioned, renamed):
its latest readings, the agents its sidecar declared and the placements of
the agents placed on it, so ` + "`factory health`" + ` and the alerts stop failing on
it. Its stored history stays until it ages out. A host that is ONLINE is
refused unless --force: its sidecar is alive and would come back on its
next Hello. Operators only; the call is audited.`,
		Example: `  factory nodes forget gpu-old
  factory nodes forget gpu-old --force`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				resp, err := c.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: args[0], Force: force})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				what := "not registered here"
				if n := resp.GetNode(); n != nil {
					what = nodeStateName(n.GetState())
				}
				fmt.Fprintf(a.stdout(), "forgot %s (%s); unplaced agents: %s\n", args[0], what, orDash(strings.Join(resp.GetUnplacedAgents(), ",")))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "forget the host even though it is ONLINE")
	return cmd
}
