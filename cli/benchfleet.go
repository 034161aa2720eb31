package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fleetBenchConfig is what `bench fleet` was asked to do.
type fleetBenchConfig struct {
	sidecars  int
	duration  time.Duration
	interval  time.Duration
	conns     int
	serverPID int
	debugAddr string
}

// fleetBenchResult is what `bench fleet -o json` prints.
type fleetBenchResult struct {
	Run         string  `json:"run"`
	Sidecars    int     `json:"sidecars"`
	Connections int     `json:"connections"`
	IntervalSec float64 `json:"interval_seconds"`
	ConnectSec  float64 `json:"connect_seconds"`
	WindowSec   float64 `json:"window_seconds"`
	// SentPerSec and AppliedPerSec are heartbeats per second over the
	// window: sent by the simulated sidecars, applied by the server (the
	// latter only with --debug-addr).
	SentPerSec    float64 `json:"heartbeats_sent_per_second"`
	AppliedPerSec float64 `json:"heartbeats_applied_per_second,omitempty"`
	Telemetry     int64   `json:"telemetry_sent"`
	SendErrors    int64   `json:"send_errors"`
	// Latency is the server's heartbeat processing time (sent_at to
	// applied) over the window, from its /debug/fleet histogram.
	Latency *latencySummary `json:"heartbeat_latency,omitempty"`
	Server  *procUsage      `json:"server,omitempty"`
	Client  *procUsage      `json:"client,omitempty"`
	// ServerCPUMicrosPerHeartbeat is the control plane's CPU over the
	// window per heartbeat it applied in the window: needs --debug-addr
	// (for the applied count) and its CPU (from /debug/process, or /proc).
	ServerCPUMicrosPerHeartbeat float64 `json:"server_cpu_us_per_heartbeat,omitempty"`
	// heartbeatCPUNote says why ServerCPUMicrosPerHeartbeat is missing.
	heartbeatCPUNote string
}

// procUsage is one process's CPU and memory over the window.
type procUsage struct {
	PID int `json:"pid"`
	// CPUCores is CPU time over the window divided by its length: 1.0 is
	// one core kept busy.
	CPUCores float64 `json:"cpu_cores"`
	// CPUFrom is where the CPU was read: the control plane's own
	// counters ("/debug/process") or this machine's "/proc".
	CPUFrom string `json:"cpu_from,omitempty"`
	// RSSMiB is the resident set now, from /proc only (0: not read);
	// PeakMiB its peak.
	RSSMiB  float64 `json:"rss_mib"`
	PeakMiB float64 `json:"peak_rss_mib"`
	// cpu is the CPU time over the window.
	cpu time.Duration
}

func newBenchFleetCommand(a *app) *cobra.Command {
	cfg := fleetBenchConfig{}
	cmd := &cobra.Command{
		Use:   "fleet --sidecars N [--duration 30s] [--interval 1s]",
		Short: "Benchmark heartbeat processing with N simulated sidecars",
		Long: `Bench fleet simulates N sidecars against the control plane at --addr. Each
opens its own FleetService.Connect stream (the streams share a few gRPC
connections, --conns), says Hello as host "bench-<random>-node-<i>" with one
or two agents, then sends a Heartbeat every --interval (each sidecar at its
own random phase) and a small Telemetry (one disk, one probe) every 10th
beat. Once every stream is up it measures for --duration and reports:

- the sustained heartbeat rate (sent; and applied by the server);
- heartbeat processing latency p50/p99/max: from the sidecar stamping
  sent_at to the server having applied the heartbeat to its fleet view.
  The server keeps this histogram (0.1 ms buckets) and serves it on its
  debug listener (--debug-listen) at /debug/fleet; pass that address as
  --debug-addr. Both clocks are this machine's, so it runs locally;
- the control plane's CPU (cores busy) and its CPU per applied heartbeat
  (CPU over the window / heartbeats applied in it). With --debug-addr the
  CPU comes from the control plane's own counters (/debug/process), which
  hold wherever the bench runs; otherwise, and for its RSS, from /proc when
  it runs on this machine: --server-pid, or the pid /debug/fleet reports.
  The benchmark's own CPU and RSS are shown too, since it shares the
  machine.

Connecting as many hosts takes an operator token (a sidecar token speaks for
its own host only). The bench hosts stay in the control plane's in-memory
fleet view and go STALE, then OFFLINE, after the run; a restart forgets them.

Progress goes to standard error; the figures to standard output (-o json
for a JSON object).`,
		Example: `  factory-controlplane --debug-listen 127.0.0.1:6060 &
  factory bench fleet --sidecars 1000 --debug-addr 127.0.0.1:6060
  factory bench fleet --sidecars 5000 --duration 60s --debug-addr 127.0.0.1:6060 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case cfg.sidecars < 1:
				return usageErrorf("--sidecars must be at least 1")
			case cfg.duration <= 0:
				return usageErrorf("--duration must be positive")
			case cfg.interval <= 0:
				return usageErrorf("--interval must be positive")
			case cfg.conns < 0:
				return usageErrorf("--conns must not be negative")
			}
			if cfg.conns == 0 {
				// The server caps streams per connection (its
				// --max-streams-per-connection, 128 by default): 100 to a
				// connection stays under it, as real sidecars, one
				// connection each, always do.
				cfg.conns = (cfg.sidecars + benchStreamsPerConn - 1) / benchStreamsPerConn
			}
			return a.runFleetBench(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.sidecars, "sidecars", 100, "simulated sidecars, each with its own Connect stream")
	f.DurationVar(&cfg.duration, "duration", 30*time.Second, "how long to measure once every stream is up")
	f.DurationVar(&cfg.interval, "interval", time.Second, "heartbeat interval of each simulated sidecar")
	f.IntVar(&cfg.conns, "conns", 0, "gRPC connections the streams share (0: one per 100 sidecars, under the control plane's --max-streams-per-connection)")
	f.IntVar(&cfg.serverPID, "server-pid", 0, "the control plane's pid on this machine, for its CPU and RSS (default: the pid --debug-addr reports)")
	f.StringVar(&cfg.debugAddr, "debug-addr", "", "the control plane's debug listener (its --debug-listen), for heartbeat latency, its CPU and its pid")
	return cmd
}

// benchStreamsPerConn is how many simulated sidecars share a connection
// by default.
const benchStreamsPerConn = 100

func (a *app) runFleetBench(cmd *cobra.Command, cfg fleetBenchConfig) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	clients := make([]factoryv1.FleetServiceClient, cfg.conns)
	for i := range clients {
		conn, err := a.dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		clients[i] = factoryv1.NewFleetServiceClient(conn)
	}
	run := "bench-" + randomHex(6)
	progress := a.stderr()
	res := fleetBenchResult{Run: run, Sidecars: cfg.sidecars, Connections: len(clients), IntervalSec: cfg.interval.Seconds()}

	pid := cfg.serverPID
	var before *fleetDebug
	if cfg.debugAddr != "" {
		d, err := readFleetDebug(ctx, cfg.debugAddr)
		if err != nil {
			return err
		}
		if pid == 0 {
			pid = d.PID
		}
	}

	fmt.Fprintf(progress, "bench %s: %d sidecars over %d connection(s), heartbeat every %s\n", run, cfg.sidecars, len(clients), cfg.interval)
	var (
		sent, telemetry, sendErrs atomic.Int64
		up                        sync.WaitGroup
		done                      sync.WaitGroup
		firstErr                  atomic.Pointer[error]
	)
	start := time.Now()
	up.Add(cfg.sidecars)
	done.Add(cfg.sidecars)
	// Connects are paced (64 at a time) so the Hello burst measures the
	// server's registration, not a thundering herd against its accept loop.
	gate := make(chan struct{}, 64)
	for i := range cfg.sidecars {
		go func() {
			defer done.Done()
			err := simulateSidecar(ctx, clients[i%len(clients)], run, i, cfg.interval, gate, &up, &sent, &telemetry)
			if err != nil && ctx.Err() == nil {
				sendErrs.Add(1)
				firstErr.CompareAndSwap(nil, &err)
			}
		}()
	}
	upCh := make(chan struct{})
	go func() { up.Wait(); close(upCh) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-upCh:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			fmt.Fprintf(progress, "  connecting: %d errors so far\n", sendErrs.Load())
		}
	}
	if p := firstErr.Load(); p != nil {
		cancel()
		done.Wait()
		return fmt.Errorf("%d of %d sidecar(s) failed to connect: %w", sendErrs.Load(), cfg.sidecars, *p)
	}
	res.ConnectSec = time.Since(start).Seconds()
	fmt.Fprintf(progress, "%d streams up in %.1fs; warming up for one interval\n", cfg.sidecars, res.ConnectSec)
	// One interval so that every sidecar is in its steady rhythm.
	select {
	case <-time.After(cfg.interval):
	case <-ctx.Done():
		return ctx.Err()
	}

	var (
		err                error
		procBefore, procAt *processDebug
	)
	if cfg.debugAddr != "" {
		if before, err = readFleetDebug(ctx, cfg.debugAddr); err != nil {
			return err
		}
		// A control plane without /debug/process still has its CPU read
		// from /proc, as before it had one.
		if procBefore, err = readProcessDebug(ctx, cfg.debugAddr); err != nil {
			fmt.Fprintf(progress, "control plane CPU from /proc instead: %v\n", err)
		}
	}
	srvBefore, _ := readProc(pid)
	cliBefore, _ := readProc(os.Getpid())
	sentBefore, telBefore := sent.Load(), telemetry.Load()
	winStart := time.Now()
	deadline := time.After(cfg.duration)
measure:
	for {
		select {
		case <-deadline:
			break measure
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			el := time.Since(winStart).Seconds()
			fmt.Fprintf(progress, "  %.0fs: %.0f heartbeats/s sent, %d errors\n", el, float64(sent.Load()-sentBefore)/el, sendErrs.Load())
		}
	}
	window := time.Since(winStart)
	res.WindowSec = window.Seconds()
	res.SentPerSec = float64(sent.Load()-sentBefore) / window.Seconds()
	res.Telemetry = telemetry.Load() - telBefore
	res.SendErrors = sendErrs.Load()
	var applied uint64
	if cfg.debugAddr != "" {
		after, err := readFleetDebug(ctx, cfg.debugAddr)
		if err != nil {
			return err
		}
		if procBefore != nil {
			if procAt, err = readProcessDebug(ctx, cfg.debugAddr); err != nil {
				fmt.Fprintf(progress, "control plane CPU from /proc instead: %v\n", err)
			}
		}
		var sum latencySummary
		sum, applied = after.since(before)
		res.Latency = &sum
		res.AppliedPerSec = float64(applied) / window.Seconds()
	}
	res.Server = serverUsage(srvBefore.usage(pid, window), procBefore, procAt)
	res.Client = cliBefore.usage(os.Getpid(), window)
	res.setHeartbeatCPU(cfg.debugAddr != "", applied)
	cancel()
	done.Wait()

	if a.jsonOutput() {
		return writeJSON(a.stdout(), res)
	}
	return writeFleetBenchTable(a.stdout(), &res)
}

// serverUsage is the control plane's usage over the window: its CPU from
// its own counters (/debug/process) where they were read, else from /proc
// (fromProc); its memory from /proc where this machine can see it, else
// the peak it reports.
func serverUsage(fromProc *procUsage, before, after *processDebug) *procUsage {
	cpu, wall, ok := after.cpuSince(before)
	if !ok {
		return fromProc
	}
	// fromProc may carry another pid for the same process (--server-pid
	// seen from outside its container): its memory still stands.
	u := fromProc
	if u == nil {
		u = &procUsage{PID: after.PID, PeakMiB: float64(after.MaxRSSBytes) / (1 << 20)}
	}
	u.cpu, u.CPUCores, u.CPUFrom = cpu, coresBusy(cpu, wall), "/debug/process"
	return u
}

// setHeartbeatCPU sets the control plane's CPU per applied heartbeat, or
// says why it is missing.
func (res *fleetBenchResult) setHeartbeatCPU(debug bool, applied uint64) {
	switch {
	case !debug:
		res.heartbeatCPUNote = "not measured: pass --debug-addr (the heartbeats applied come from its /debug/fleet)"
	case res.Server == nil:
		res.heartbeatCPUNote = "not measured: no control plane CPU"
	case applied == 0:
		res.heartbeatCPUNote = "not measured: no heartbeat applied in the window"
	default:
		res.ServerCPUMicrosPerHeartbeat = microsPer(res.Server.cpu, int64(applied))
	}
}

// writeFleetBenchTable prints a run's figures as the table bench fleet
// shows.
func writeFleetBenchTable(w io.Writer, res *fleetBenchResult) error {
	interval := time.Duration(res.IntervalSec * float64(time.Second))
	tw := newTable(w)
	fmt.Fprintf(tw, "run\t%s (%d sidecars, %d connection(s), heartbeat every %s)\n", res.Run, res.Sidecars, res.Connections, interval)
	fmt.Fprintf(tw, "connect\t%.1fs for every stream's Hello\n", res.ConnectSec)
	fmt.Fprintf(tw, "heartbeats/s\t%.0f sent", res.SentPerSec)
	if res.Latency != nil {
		fmt.Fprintf(tw, ", %.0f applied", res.AppliedPerSec)
	}
	fmt.Fprintf(tw, " over %.1fs (%d telemetry, %d errors)\n", res.WindowSec, res.Telemetry, res.SendErrors)
	if l := res.Latency; l != nil {
		fmt.Fprintf(tw, "heartbeat latency\tp50 %.2fms  p99 %.2fms  max %.2fms  (%d heartbeats; sent_at to applied, server histogram)\n", l.P50ms, l.P99ms, l.Maxms, l.Count)
	} else {
		fmt.Fprintf(tw, "heartbeat latency\tnot measured: pass --debug-addr\n")
	}
	if res.ServerCPUMicrosPerHeartbeat > 0 {
		fmt.Fprintf(tw, "CPU per heartbeat\tcontrol plane %.1f µs per applied heartbeat\n", res.ServerCPUMicrosPerHeartbeat)
	} else {
		fmt.Fprintf(tw, "CPU per heartbeat\t%s\n", res.heartbeatCPUNote)
	}
	for _, p := range []struct {
		name string
		u    *procUsage
	}{{"control plane", res.Server}, {"bench client", res.Client}} {
		if p.u == nil {
			fmt.Fprintf(tw, "%s\tnot measured: pass --debug-addr, or --server-pid for a local control plane\n", p.name)
			continue
		}
		from := ""
		if p.u.CPUFrom != "" {
			from = " (" + p.u.CPUFrom + ")"
		}
		rss := "RSS not read (not on this machine)"
		if p.u.RSSMiB > 0 {
			rss = fmt.Sprintf("RSS %.0f MiB", p.u.RSSMiB)
		}
		fmt.Fprintf(tw, "%s\tpid %d: CPU %.2f cores%s, %s (peak %.0f MiB)\n", p.name, p.u.PID, p.u.CPUCores, from, rss, p.u.PeakMiB)
	}
	return tw.Flush()
}

// simulateSidecar is one simulated sidecar: Hello, then a heartbeat every
// interval and telemetry every 10th beat, until ctx ends. It marks up done
// once its Hello is answered (or it failed).
func simulateSidecar(ctx context.Context, c factoryv1.FleetServiceClient, run string, i int, interval time.Duration,
	gate chan struct{}, up *sync.WaitGroup, sent, telemetry *atomic.Int64) error {
	upOnce := sync.OnceFunc(up.Done)
	defer upOnce()
	gate <- struct{}{}
	host := fmt.Sprintf("%s-node-%d", run, i)
	stream, err := c.Connect(ctx)
	if err == nil {
		agents := []*factoryv1.HostedAgent{{Name: host + "-a0", Roles: []string{"builder"}}}
		if i%2 == 1 {
			agents = append(agents, &factoryv1.HostedAgent{Name: host + "-a1", Roles: []string{"tester"}})
		}
		err = stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{
			Host: host, Version: "bench", Agents: agents, Capabilities: []string{"disk", "probe"}}}})
	}
	if err == nil {
		_, err = stream.Recv() // the config: the Hello was applied
	}
	<-gate
	if err != nil {
		return fmt.Errorf("sidecar %s: %w", host, err)
	}
	upOnce()
	// Whatever else the server sends is read and dropped, so its sends
	// never stall on flow control.
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	// A random phase, so N sidecars spread their beats over the interval
	// instead of beating in step.
	select {
	case <-time.After(rand.N(interval)):
	case <-ctx.Done():
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for beat := 1; ; beat++ {
		msg := &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}
		if err := stream.Send(msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sidecar %s: heartbeat: %w", host, err)
		}
		sent.Add(1)
		if beat%10 == 0 {
			now := timestamppb.Now()
			if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: &factoryv1.Telemetry{
				CollectedAt: now,
				Disks:       []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1 << 40, UsedBytes: 1 << 39, AvailableBytes: 1 << 39}},
				Probes:      []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Target: "http://127.0.0.1:4000/health", Ok: true, Latency: durationpb.New(time.Millisecond)}},
			}}}); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("sidecar %s: telemetry: %w", host, err)
			}
			telemetry.Add(1)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			_ = stream.CloseSend()
			return nil
		}
	}
}

// fleetDebug is the control plane's /debug/fleet (server.FleetDebug).
type fleetDebug struct {
	PID          int               `json:"pid"`
	Heartbeats   uint64            `json:"heartbeats"`
	BucketMicros int64             `json:"bucket_micros"`
	Buckets      map[string]uint64 `json:"buckets"`
}

func readFleetDebug(ctx context.Context, addr string) (*fleetDebug, error) {
	var d fleetDebug
	if err := getDebugJSON(ctx, addr, "/debug/fleet", &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// since summarizes the heartbeats applied between before and d: each
// percentile is its bucket's upper bound, so it errs high by at most one
// bucket.
func (d *fleetDebug) since(before *fleetDebug) (latencySummary, uint64) {
	maxIdx := 0
	counts := map[int]uint64{}
	var n uint64
	for k, c := range d.Buckets {
		i, err := strconv.Atoi(k)
		if err != nil {
			continue
		}
		if c -= before.Buckets[k]; c > 0 {
			counts[i] = c
			n += c
			maxIdx = max(maxIdx, i)
		}
	}
	width := time.Duration(d.BucketMicros) * time.Microsecond
	at := func(p float64) float64 {
		rank := uint64(p*float64(n) + 0.999999)
		var seen uint64
		for i := 0; i <= maxIdx; i++ {
			if seen += counts[i]; seen >= rank {
				return float64(time.Duration(i+1)*width) / float64(time.Millisecond)
			}
		}
		return float64(time.Duration(maxIdx+1)*width) / float64(time.Millisecond)
	}
	if n == 0 {
		return latencySummary{}, 0
	}
	return latencySummary{Count: int(n), P50ms: at(0.50), P99ms: at(0.99), Maxms: at(1)}, n
}

// procSample is a process's CPU time and memory at one moment.
type procSample struct {
	at             time.Time
	cpuTicks       uint64
	rssKiB, hwmKiB uint64
}

// readProc reads pid's CPU time (/proc/PID/stat) and memory
// (/proc/PID/status); nil where there is no such process or no /proc.
func readProc(pid int) (*procSample, error) {
	if pid <= 0 {
		return nil, errors.New("no pid")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name may hold spaces: fields start after its ')'.
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseUint(fields[11], 10, 64)
	stime, _ := strconv.ParseUint(fields[12], 10, 64)
	out := &procSample{at: time.Now(), cpuTicks: utime + stime}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			out.rssKiB = n
		case "VmHWM":
			out.hwmKiB = n
		}
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// usage is the process's CPU over the window since s and its memory now;
// nil when s is.
func (s *procSample) usage(pid int, window time.Duration) *procUsage {
	if s == nil {
		return nil
	}
	now, err := readProc(pid)
	if err != nil {
		return nil
	}
	cpu := time.Duration(now.cpuTicks-s.cpuTicks) * time.Second / clockTicks
	return &procUsage{PID: pid, CPUCores: cpu.Seconds() / window.Seconds(), CPUFrom: "/proc",
		RSSMiB: float64(now.rssKiB) / 1024, PeakMiB: float64(now.hwmKiB) / 1024, cpu: cpu}
}
