package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withCommands adds subs under parent, which keeps its own RunE: `factory
// agents` still lists, `factory agents restart NAME` acts.
func withCommands(parent *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	parent.AddCommand(subs...)
	return parent
}

// sendCommand runs SendCommand and prints the sidecar's result; a command
// that ran and failed is an error, so scripts see it in the exit status.
func (a *app) sendCommand(cmd *cobra.Command, req *factoryv1.SendCommandRequest, timeout time.Duration) error {
	return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
		req.Timeout = durationpb.New(timeout)
		// The call waits for the sidecar: the CLI's own deadline must cover
		// the command's.
		ctx, cancel := context.WithTimeout(ctx, timeout+a.timeout)
		defer cancel()
		resp, err := c.SendCommand(ctx, req)
		if err != nil {
			return err
		}
		r := resp.GetResult()
		if a.jsonOutput() {
			if err := writeProto(a.stdout(), r); err != nil {
				return err
			}
		} else {
			if out := strings.TrimRight(r.GetOutput(), "\n"); out != "" {
				fmt.Fprintln(a.stdout(), out)
			}
			state := "ok"
			if !r.GetOk() {
				state = "FAILED: " + r.GetError()
			}
			fmt.Fprintf(a.stderr(), "%s on %s: %s (%s)\n", cmd.Name(), req.GetHost(), state, r.GetTook().AsDuration().Round(time.Millisecond))
		}
		if !r.GetOk() {
			return errors.New(r.GetError())
		}
		return nil
	})
}

func newAgentsRestartCommand(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Restart an agent with its host's configured restart command",
		Long: `Restart asks the sidecar of the agent's host to run the restart_command
configured for the agent in its YAML (agents[].restart_command, e.g.
"systemctl restart forge"), and prints the command's output. The exit
status is non-zero when the command failed or timed out. Operators only;
the call is audited.`,
		Example: `  factory agents restart forge
  factory agents restart forge --timeout-restart 2m -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var host string
			err := a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				resp, err := c.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
				if err != nil {
					return err
				}
				for _, ag := range resp.GetAgents() {
					if ag.GetName() == name {
						host = ag.GetHost()
					}
				}
				return nil
			})
			switch {
			case err != nil:
				return err
			case host == "":
				return fmt.Errorf("agent %s is on no connected host (see `factory agents`)", name)
			}
			return a.sendCommand(cmd, &factoryv1.SendCommandRequest{Host: host,
				Command: &factoryv1.SendCommandRequest_RestartAgent{RestartAgent: &factoryv1.RestartAgent{Name: name}}}, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout-restart", 60*time.Second, "how long to wait for the sidecar's result")
	return cmd
}

func newNodesDrainCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "drain HOST",
		Short: "Drain a host: its agents are to claim no new work",
		Long: `Drain tells the host's sidecar that the host is drained. The mark shows in
` + "`factory nodes`" + ` (DRAINED) and the sidecar repeats it whenever it reconnects.
Operators only; the call is audited.`,
		Example: `  factory nodes drain gpu-1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.sendCommand(cmd, &factoryv1.SendCommandRequest{Host: args[0],
				Command: &factoryv1.SendCommandRequest_Drain{Drain: &factoryv1.DrainHost{}}}, 30*time.Second)
		},
	}
}

func newAgentsPlaceCommand(a *app) *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "place NAME --host HOST",
		Short: "Place an agent on a host: that host's sidecar may act for it",
		Long: `Place records that the agent runs on HOST. That host's sidecar token may
then declare the agent in its Hello and report its spend; no other sidecar
may. An agent is placed on one host at a time: placing it again moves it,
and the old host's sidecar loses it at once (on other replicas within
about a second). Placements are kept in the store, so every replica
agrees. Operators only; the call is audited.

A sidecar started with the operator token (as ` + "`make run`" + ` does) may also
declare agents placed nowhere, so a single-host setup needs no placement.`,
		Example: `  factory agents place forge --host gpu-01
  factory agents placement`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				resp, err := c.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: args[0], Host: host})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				p := resp.GetPlacement()
				if prev := resp.GetPreviousHost(); prev != "" && prev != p.GetHost() {
					_, err = fmt.Fprintf(a.stdout(), "Moved agent %s from host %s to host %s.\n", p.GetAgent(), prev, p.GetHost())
					return err
				}
				_, err = fmt.Fprintf(a.stdout(), "Placed agent %s on host %s.\n", p.GetAgent(), p.GetHost())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the host whose sidecar runs the agent (required)")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

func newAgentsUnplaceCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "unplace NAME",
		Short: "Remove an agent's placement: no sidecar acts for it",
		Long: `Unplace removes the agent's placement: no sidecar token may declare it or
report its spend until it is placed again. Operators only; audited.`,
		Example: `  factory agents unplace forge`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				resp, err := c.UnplaceAgent(ctx, &factoryv1.UnplaceAgentRequest{Agent: args[0]})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetPlacement())
				}
				p := resp.GetPlacement()
				_, err = fmt.Fprintf(a.stdout(), "Agent %s is no longer placed on host %s.\n", p.GetAgent(), p.GetHost())
				return err
			})
		},
	}
}

func newAgentsPlacementCommand(a *app) *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:     "placement",
		Aliases: []string{"placements"},
		Short:   "List where agents are placed",
		Long: `Placement lists the operators' placements, by agent: the host whose
sidecar may act for the agent, who placed it and when.`,
		Example: `  factory agents placement
  factory agents placement --host gpu-01 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				var all []*factoryv1.Placement
				page := ""
				for {
					resp, err := c.ListPlacements(ctx, &factoryv1.ListPlacementsRequest{Host: host, PageSize: 1000, PageToken: page})
					if err != nil {
						return err
					}
					all = append(all, resp.GetPlacements()...)
					if page = resp.GetNextPageToken(); page == "" {
						break
					}
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), all)
				}
				tw := newTable(a.stdout())
				fmt.Fprintln(tw, "AGENT\tHOST\tPLACED\tBY")
				now := time.Now()
				for _, p := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.GetAgent(), p.GetHost(), humanAge(p.GetPlacedAt(), now), orDash(p.GetPlacedBy()))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only the agents placed on this host")
	return cmd
}
