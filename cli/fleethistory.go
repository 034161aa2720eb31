package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

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
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), readings)
				}
				return writeHistoryTable(a.stdout(), readings)
			})
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "how far back to look")
	return cmd
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

func writeHistoryTable(w io.Writer, readings []*factoryv1.NodeReading) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tGPU UTIL\tVRAM MIB\tGPU TEMP\tFULLEST DISK\tPROBES OK")
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
		for _, g := range t.GetGpus() {
			utils = append(utils, fmt.Sprintf("%d%%", g.GetUtilizationPercent()))
			used, total = used+g.GetMemoryUsedBytes(), total+g.GetMemoryTotalBytes()
			hottest = max(hottest, g.GetTemperatureCelsius())
		}
		for _, d := range t.GetDisks() {
			if d.GetTotalBytes() == 0 {
				continue
			}
			if pct := 100 * float64(d.GetUsedBytes()) / float64(d.GetTotalBytes()); pct >= worst {
				worst, fullest = pct, fmt.Sprintf("%s %.0f%%", d.GetPath(), pct)
			}
		}
		for _, p := range t.GetProbes() {
			probe++
			if p.GetOk() {
				probesOK++
			}
		}
		vram, temp := "-", "-"
		if len(t.GetGpus()) > 0 {
			vram, temp = fmt.Sprintf("%d/%d", used>>20, total>>20), fmt.Sprintf("%dC", hottest)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\n", r.GetTime().AsTime().Local().Format(time.DateTime),
			orDash(strings.Join(utils, ",")), vram, temp, fullest, probesOK, probe)
	}
	return tw.Flush()
}
