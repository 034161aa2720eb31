package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withFleet is withQueue for the FleetService.
func (a *app) withFleet(cmd *cobra.Command, fn func(ctx context.Context, c factoryv1.FleetServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = fn(ctx, factoryv1.NewFleetServiceClient(conn))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// nodeStateName is "ONLINE" for NODE_STATE_ONLINE.
func nodeStateName(s factoryv1.NodeState) string {
	if s == factoryv1.NodeState_NODE_STATE_UNSPECIFIED {
		return "UNKNOWN"
	}
	return strings.TrimPrefix(s.String(), "NODE_STATE_")
}

func newNodesCommand(a *app) *cobra.Command {
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the factory's hosts and whether their sidecars are alive",
		Long: `Nodes lists every host whose factory-sidecar has connected: its liveness
(ONLINE while heartbeats arrive, STALE after two missed ones, OFFLINE after
five minutes of silence), the agents it runs, its GPUs and disks, its model
swaps in the last hour (above 20 the host thrashes) and when it was last
heard from. With --watch the list is shown again every --interval.`,
		Example: `  factory nodes
  factory nodes --watch
  factory nodes -o json | jq '.[] | select(.state != "NODE_STATE_ONLINE").host'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				return a.view(ctx, cmd, wf, paintFleetTables, func(ctx context.Context, w io.Writer) error {
					resp, err := c.ListNodes(ctx, &factoryv1.ListNodesRequest{})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						return writeProtoList(w, resp.GetNodes())
					}
					return writeNodesTable(w, resp.GetNodes(), time.Now())
				})
			})
		},
	}
	wf = addWatchFlags(cmd, defaultWatchInterval)
	return cmd
}

// paintFleetTables colours the nodes', agents' and GPUs' tables: a
// host's or agent's liveness, and a GPU's memory where health fails it.
func paintFleetTables(text string) string {
	return paintColumns(text, columnPainters{"STATE": paintStates, "VRAM": paintVRAM})
}

func writeNodesTable(w io.Writer, nodes []*factoryv1.Node, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tSTATE\tAGENTS\tGPUS\tDISKS\tSWAPS/H\tLAST SEEN\tVERSION")
	for _, n := range nodes {
		t := n.GetTelemetry()
		state := nodeStateName(n.GetState())
		if n.GetDrained() {
			state += ",DRAINED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", n.GetHost(), state,
			orDash(strings.Join(n.GetAgents(), ",")), len(t.GetGpus()), len(t.GetDisks()), n.GetModelSwapsLastHour(),
			humanAge(n.GetLastSeen(), now), orDash(n.GetVersion()))
	}
	return tw.Flush()
}

func newAgentsCommand(a *app) *cobra.Command {
	var host string
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List the agents: liveness, host and current task",
		Long: `Agents lists every agent a sidecar declared or that called the queue: its
liveness (its host's heartbeats and its own claims and renewals both count),
the host it runs on, its role, the task it is working on and when it was
last heard from. With --watch the list is shown again every --interval.`,
		Example: `  factory agents
  factory agents --watch --interval 5s
  factory agents --host gpu-1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				return a.view(ctx, cmd, wf, paintFleetTables, func(ctx context.Context, w io.Writer) error {
					resp, err := c.ListAgents(ctx, &factoryv1.ListAgentsRequest{Host: host})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						return writeProtoList(w, resp.GetAgents())
					}
					tw := newTable(w)
					fmt.Fprintln(tw, "NAME\tSTATE\tHOST\tROLE\tTASK\tLAST SEEN")
					now := time.Now()
					for _, ag := range resp.GetAgents() {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ag.GetName(), nodeStateName(ag.GetState()), orDash(ag.GetHost()),
							orDash(ag.GetRole()), orDash(ag.GetCurrentTask()), humanAge(ag.GetLastSeen(), now))
					}
					return tw.Flush()
				})
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only the agents on this host")
	wf = addWatchFlags(cmd, defaultWatchInterval)
	return cmd
}

// hostGPU is one GPU as `factory gpu -o json` prints it: the device with
// its host.
type hostGPU struct {
	Host string          `json:"host"`
	GPU  json.RawMessage `json:"gpu"`
}

func newGPUCommand(a *app) *cobra.Command {
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "gpu",
		Short: "Show every GPU in the factory: VRAM, utilisation, temperature, power, processes",
		Long: `GPU shows each GPU the sidecars read through NVML, from their latest
telemetry: host, index and name, VRAM used of total, utilisation,
temperature, power draw of its limit, and the compute processes on it with
the agent that owns each (when the sidecar knows the agent's pid). A host
without a GPU shows why. On a terminal, VRAM is red where health fails the
GPU (23/24 of its memory used). With --watch the table is shown again
every --interval.`,
		Example: `  factory gpu
  factory gpu --watch
  factory gpu -o json | jq '.[] | .gpu.memory_used_bytes'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				return a.view(ctx, cmd, wf, paintFleetTables, func(ctx context.Context, w io.Writer) error {
					resp, err := c.ListNodes(ctx, &factoryv1.ListNodesRequest{})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						out := []hostGPU{}
						for _, n := range resp.GetNodes() {
							for _, g := range n.GetTelemetry().GetGpus() {
								raw, err := protoJSON(g)
								if err != nil {
									return err
								}
								out = append(out, hostGPU{Host: n.GetHost(), GPU: raw})
							}
						}
						return writeJSON(w, out)
					}
					return writeGPUTable(w, resp.GetNodes(), time.Now())
				})
			})
		},
	}
	wf = addWatchFlags(cmd, defaultWatchInterval)
	return cmd
}

func writeGPUTable(w io.Writer, nodes []*factoryv1.Node, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tGPU\tNAME\tVRAM\tUTIL\tTEMP\tPOWER\tPROCESSES")
	for _, n := range nodes {
		t := n.GetTelemetry()
		host := n.GetHost()
		if n.GetState() != factoryv1.NodeState_NODE_STATE_ONLINE {
			// Not current: what the host said last, and how long ago.
			host = fmt.Sprintf("%s (%s, read %s)", host, nodeStateName(n.GetState()), humanAge(n.GetTelemetryAt(), now))
		}
		if len(t.GetGpus()) == 0 {
			why := t.GetGpuError()
			if e := t.GetNvmlError(); e != "" {
				why = "NVML failing: " + e
			}
			fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\t-\t-\t-\n", host, orDash(why))
			continue
		}
		for _, g := range t.GetGpus() {
			var procs []string
			for _, p := range g.GetProcesses() {
				procs = append(procs, fmt.Sprintf("%d(%s) %dMiB", p.GetPid(), orDash(p.GetAgent()), p.GetUsedMemoryBytes()>>20))
			}
			name := g.GetName()
			if e := g.GetError(); e != "" {
				name += " (" + e + ")"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d/%d MiB\t%d%%\t%d°C\t%.0f/%.0f W\t%s\n", host, g.GetIndex(), name,
				g.GetMemoryUsedBytes()>>20, g.GetMemoryTotalBytes()>>20, g.GetUtilizationPercent(), g.GetTemperatureCelsius(),
				float64(g.GetPowerMilliwatts())/1000, float64(g.GetPowerLimitMilliwatts())/1000, orDash(strings.Join(procs, ", ")))
		}
	}
	return tw.Flush()
}

// maxHealthExit caps health's exit status: shells read 126 and above as
// "not run" or a signal.
const maxHealthExit = 125

func newHealthCommand(a *app) *cobra.Command {
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check the whole factory, a ✅/❌ line per check; exit status = failed checks",
		Long: `Health is the runbook's health-check script as one command. The control
plane checks its queue's store, each node's liveness, each service probe the
sidecars ran, each disk (fails at 85% used, as df counts: used / (used +
available)), each GPU's memory (fails at 23/24 of its total, where the next
model load would not fit) and NVML on each GPU host (fails with its error
when the driver is broken or a GPU is gone), and prints a line per check:
✅ or ❌ on a terminal, "ok" or "FAIL" into a pipe or a file. A host that
is not ONLINE has no current readings: its probes, disks and GPUs show ❔
("UNKN") with their age and count as failed, since unknown is not
healthy (FACTORY_COLOR=always|never overrides; NO_COLOR turns colour and
symbols off). The exit status is the number of failed checks (capped at
125), so a cron job or a script can act on it. With --watch it checks
again every --interval until interrupted; the exit status is then the last
round's.`,
		Example: `  factory health
  factory health --watch --interval 30s
  factory health -o json | jq '.checks[] | select(.ok | not)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var failed int32
			err := a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				return a.view(ctx, cmd, wf, paintHealth, func(ctx context.Context, w io.Writer) error {
					resp, err := c.GetHealth(ctx, &factoryv1.GetHealthRequest{})
					if err != nil {
						return err
					}
					failed = resp.GetFailed()
					if a.jsonOutput() {
						return writeProto(w, resp)
					}
					return writeHealth(w, resp, a.styled())
				})
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return &ExitError{Code: min(int(failed), maxHealthExit), Err: fmt.Errorf("%d health check(s) failed", failed)}
			}
			return nil
		},
	}
	// A round of health asks every node, probe and disk: a slower default
	// than the lists'.
	wf = addWatchFlags(cmd, 10*time.Second)
	return cmd
}

// writeHealth prints a line per check, marked ✅ or ❌ when symbols is set
// (a person at a terminal), else "ok" or "FAIL", which grep and logs read.
func writeHealth(w io.Writer, resp *factoryv1.GetHealthResponse, symbols bool) error {
	for _, c := range resp.GetChecks() {
		mark := "ok  "
		unknown := c.GetState() == factoryv1.HealthCheckState_HEALTH_CHECK_STATE_UNKNOWN
		switch {
		case symbols && unknown:
			mark = "❔"
		case symbols && c.GetOk():
			mark = "✅"
		case symbols:
			mark = "❌"
		case unknown:
			mark = "UNKN"
		case !c.GetOk():
			mark = "FAIL"
		}
		if _, err := fmt.Fprintf(w, "%s %s: %s\n", mark, c.GetName(), c.GetDetail()); err != nil {
			return err
		}
	}
	unknown := ""
	if n := resp.GetUnknown(); n > 0 {
		unknown = fmt.Sprintf(" (%d unknown)", n)
	}
	_, err := fmt.Fprintf(w, "%d of %d checks failed%s\n", resp.GetFailed(), len(resp.GetChecks()), unknown)
	return err
}

// healthSummary is health's last line.
var healthSummary = regexp.MustCompile(`(?m)^(\d+) of \d+ checks failed( \(\d+ unknown\))?$`)

// paintHealth colours health's summary: red while a check fails.
func paintHealth(text string) string {
	return healthSummary.ReplaceAllStringFunc(text, func(line string) string {
		if strings.HasPrefix(line, "0 ") {
			return colourGreen.paint(line)
		}
		return colourRed.paint(line)
	})
}
