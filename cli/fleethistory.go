package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newNodesHistoryCommand(a *app) *cobra.Command {
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "history HOST",
		Short: "Show a host's stored telemetry over a past window",
		Long: `History shows the telemetry the control plane stored for a host, oldest
first: one reading per minute by default (readings in between are dropped
as they arrive), kept 7 days by default. Each row sums the host's GPUs
(utilisation per GPU, VRAM used of total, hottest temperature), its fullest
disk and how many service probes passed. -o json prints every reading in
full.`,
		Example: `  factory nodes history gpu-1
  factory nodes history gpu-1 --since 2h
  factory nodes history gpu-1 --since 168h -o json | jq '.[].telemetry.gpus[0].memoryUsedBytes'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if since <= 0 {
				return fmt.Errorf("--since must be positive, got %s", since)
			}
			return a.withFleet(cmd, func(ctx context.Context, c factoryv1.FleetServiceClient) error {
				now := time.Now()
				readings, err := nodeHistory(ctx, c, args[0], now.Add(-since), now)
				if err != nil {
					return err
				}
				if len(readings) == 0 {
					// The API answers an empty list for any host, known or
					// not (history ages out); a name the fleet has never
					// heard of is a typo, not a quiet host.
					if err := checkHostKnown(ctx, c, args[0]); err != nil {
						return err
					}
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), readings)
				}
				if len(readings) == 0 {
					_, err := fmt.Fprintf(a.stdout(), "no history yet for %s in the last %s\n", args[0], since)
					return err
				}
				return writeHistoryTable(a.stdout(), readings)
			})
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "how far back to look")
	return cmd
}

// checkHostKnown fails unless host is one of the nodes the control plane
// lists, naming the ones it knows.
func checkHostKnown(ctx context.Context, c factoryv1.FleetServiceClient, host string) error {
	resp, err := c.ListNodes(ctx, &factoryv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	var known []string
	for _, n := range resp.GetNodes() {
		if n.GetHost() == host {
			return nil
		}
		known = append(known, n.GetHost())
	}
	if len(known) == 0 {
		return fmt.Errorf("no host named %s (no host has connected to this control plane)", host)
	}
	// A big fleet's list would bury the message: "factory nodes" has it all.
	const shown = 20
	list := strings.Join(known[:min(len(known), shown)], ", ")
	if len(known) > shown {
		list += fmt.Sprintf(" and %d more: factory nodes", len(known)-shown)
	}
	return fmt.Errorf("no host named %s (known: %s)", host, list)
}

// nodeHistory fetches every reading of host in [from, until), page by page:
// a page is capped (a reading can be kilobytes), a day at the default
// sampling is more than one.
func nodeHistory(ctx context.Context, c factoryv1.FleetServiceClient, host string, from, until time.Time) ([]*factoryv1.NodeReading, error) {
	var out []*factoryv1.NodeReading
	for {
		resp, err := c.GetNodeHistory(ctx, &factoryv1.GetNodeHistoryRequest{Host: host,
			Since: timestamppb.New(from), Until: timestamppb.New(until)})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetReadings()...)
		rs := resp.GetReadings()
		if !resp.GetTruncated() || len(rs) == 0 {
			return out, nil
		}
		// Stored readings of one host are a sampling interval apart, so the
		// next page starts just after the last one.
		from = rs[len(rs)-1].GetTime().AsTime().Add(time.Nanosecond)
	}
}

// historyBarWidth is the utilisation bar's width in cells: 5% a cell.
const historyBarWidth = 20

// writeHistoryTable prints one row per reading, with a bar of the mean GPU
// utilisation so a busy or idle stretch shows at a glance.
func writeHistoryTable(w io.Writer, readings []*factoryv1.NodeReading) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tGPU UTIL\tVRAM MIB\tGPU TEMP\tFULLEST DISK\tPROBES OK\tMEAN GPU UTIL 0-100%")
	for _, r := range readings {
		t := r.GetTelemetry()
		var (
			utils           []string
			used, total     uint64
			hottest         uint32
			fullest         = "-"
			worst           float64
			probesOK, probe int
		)
		var utilSum int64
		for _, g := range t.GetGpus() {
			utils = append(utils, fmt.Sprintf("%d%%", g.GetUtilizationPercent()))
			utilSum += int64(g.GetUtilizationPercent())
			used, total = used+g.GetMemoryUsedBytes(), total+g.GetMemoryTotalBytes()
			hottest = max(hottest, g.GetTemperatureCelsius())
		}
		for _, d := range t.GetDisks() {
			if d.GetUsedBytes()+d.GetAvailableBytes() == 0 {
				continue
			}
			if pct := 100 * fleet.DiskUsedRatio(d.GetUsedBytes(), d.GetAvailableBytes()); pct >= worst {
				worst, fullest = pct, fmt.Sprintf("%s %.0f%%", d.GetPath(), pct)
			}
		}
		for _, p := range t.GetProbes() {
			probe++
			if p.GetOk() {
				probesOK++
			}
		}
		vram, temp, bar := "-", "-", "-"
		if n := int64(len(t.GetGpus())); n > 0 {
			vram, temp = fmt.Sprintf("%d/%d", used>>20, total>>20), fmt.Sprintf("%dC", hottest)
			// Against 100%, not the window's busiest reading: a host idling
			// at 3% must not draw full bars.
			bar = blockBar(utilSum, 100*n, historyBarWidth)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.GetTime().AsTime().Local().Format(time.DateTime),
			orDash(strings.Join(utils, ",")), vram, temp, fullest, probesOK, probe, bar)
	}
	return tw.Flush()
}
