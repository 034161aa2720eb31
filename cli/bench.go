package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// benchConfig is what `bench queue` was asked to do.
type benchConfig struct {
	agents        int
	tasks         int
	batch         int
	probes        int
	probeInterval time.Duration
	conns         int
	// addrs are the replicas the agents are spread over (--addrs); empty
	// means --addr alone. Tasks are created through the first.
	addrs []string
	// wakeAddr, when set, is where the wake-up phase's agents wait, while
	// its tasks are created through the first address: a wake-up that
	// crosses replicas.
	wakeAddr string
	// watchers is how many WatchTasks streams are held open during the
	// run, in watcherMode (see the command's help), spread watchersPerToken to a token and watchersPerConn to a
	// connection so the control plane's stream caps admit them.
	watchers         int
	watcherMode      string
	watchersPerToken int
	watchersPerConn  int
	// debugAddr is the control plane's debug listener, for its CPU over
	// the claim/complete phase; empty: not measured.
	debugAddr string
	// preload is how many READY tasks of preloadRole are created ahead of
	// the run's own (a backlog of another role); preloadRole empty means
	// "<run>-preload".
	preload     int
	preloadRole string
	// stream has each throughput agent claim and complete over one Work
	// stream instead of unary calls.
	stream bool
}

// latencySummary is a latency distribution in milliseconds.
type latencySummary struct {
	Count int     `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Maxms float64 `json:"max_ms"`
}

// benchResult is what `bench queue -o json` prints.
type benchResult struct {
	Run            string         `json:"run"`
	Role           string         `json:"role"`
	Agents         int            `json:"agents"`
	Tasks          int            `json:"tasks"`
	Batch          int            `json:"batch"`
	Stream         bool           `json:"stream"` // the agents claimed and completed over Work streams
	Connections    int            `json:"connections"`
	Addrs          []string       `json:"addrs"`
	WakeAddr       string         `json:"wake_addr,omitempty"`
	CreateSeconds  float64        `json:"create_seconds"`
	CycleSeconds   float64        `json:"cycle_seconds"`
	CyclesPerSec   float64        `json:"cycles_per_second"`
	EmptyClaims    int64          `json:"empty_claims"`
	ClaimLatency   latencySummary `json:"claim_latency"`
	WakeupLatency  latencySummary `json:"wakeup_latency"`
	CompleteErrors int64          `json:"complete_errors"`
	Watchers       *watcherStats  `json:"watchers,omitempty"`
	// ServerCPUMicrosPerCycle is the control plane's CPU time (user plus
	// system, from its /debug/process) over the claim/complete phase per
	// task completed, and ServerCPUCores the same CPU over the phase's
	// length; both need --debug-addr. ClientCPUMicrosPerCycle is the
	// bench's own CPU over the same phase per task completed.
	ServerCPUMicrosPerCycle float64 `json:"server_cpu_us_per_cycle,omitempty"`
	ClientCPUMicrosPerCycle float64 `json:"client_cpu_us_per_cycle,omitempty"`
	ServerCPUCores          float64 `json:"server_cpu_cores,omitempty"`
	// Preload is how many READY tasks of PreloadRole were ahead of the
	// run's own; PreloadSeconds how long creating them took.
	Preload        int     `json:"preload"`
	PreloadRole    string  `json:"preload_role,omitempty"`
	PreloadSeconds float64 `json:"preload_seconds,omitempty"`
	// serverCPUNote says why the control plane's CPU is not measured.
	serverCPUNote string
}

// watcherStats is what the --watchers streams did during the run.
type watcherStats struct {
	Requested int    `json:"requested"`
	Mode      string `json:"mode"`
	Tokens    int    `json:"tokens"`
	Conns     int    `json:"connections"`
	// Open is how many were open when the throughput phase started;
	// Refused how many the control plane refused to open.
	Open    int64 `json:"open"`
	Refused int64 `json:"refused"`
	// ClosedBehind is how many the control plane closed during the run
	// because they fell behind (slow watchers, by design).
	ClosedBehind int64 `json:"closed_behind"`
	// Events is how many task events the watchers received.
	Events int64 `json:"events"`
}

func newBenchCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running control plane",
		Long: `Bench commands load a running control plane over real gRPC and report
throughput and latency. They create their own tasks under a role no real
agent has, so they never take or disturb real work, and they finish every
task they create.`,
		Example: `  factory bench queue --agents 8 --tasks 5000
  factory bench fleet --sidecars 1000 --debug-addr 127.0.0.1:6060
  factory bench spend --events 100000 --batch 500 --reporters 4`,
	}
	cmd.AddCommand(newBenchQueueCommand(a), newBenchFleetCommand(a), newBenchSpendCommand(a))
	return cmd
}

func newBenchQueueCommand(a *app) *cobra.Command {
	cfg := benchConfig{}
	cmd := &cobra.Command{
		Use:   "queue --agents N --tasks M [--batch K] [--wait-probes P] [--stream]",
		Short: "Benchmark claim/complete throughput and wake-up latency",
		Long: `Bench queue runs two phases against the control plane at --addr.

Throughput: it creates M tasks (CreateTasks, 1000 per call) under a role
unique to this run ("bench-<random>"), then runs N simulated agents at
once. Each agent loops ClaimTask (up to K tasks) then CompleteTask (K=1) or
CompleteTasks (K>1) until all M tasks are DONE. It reports cycles/s
(completed tasks per second of this phase) and ClaimTask latency p50/p99.

Stream: with --stream each agent opens one Work stream (under its own
agent token) for the throughput phase and loops on it: it sends the
completions of the tasks it holds (one per task) and its next claim
together, then reads their answers, so a cycle is one round trip and no
call pays its own HTTP/2 stream, headers and interceptors. Cycles/s then
measure that path; claim latency runs from sending a claim to its answer,
the completions sent ahead of it included. Completions the control plane
refuses are counted as complete errors; a refused claim ends the run. The
wake-up phase stays unary.

Wake-up: P agents wait in ClaimTask (wait 10s) on the empty queue while
the bench creates P tasks one at a time, --probe-interval apart. Wake-up
latency runs from just before CreateTask until the waiting agent holds the
task: the push path from commit to claimer, which a polling queue cannot
do well.

Watchers: --watchers N holds N WatchTasks streams (changes only) open for
the whole run, opened before the tasks are created. --watcher-mode says
what they do: "idle" watchers wait for a role no task has (like a client
watching its own task or role while the rest of the queue churns), so
they hear nothing; "slow" ones watch the whole queue and never read (with
the smallest flow-control windows); "busy" ones watch the whole queue and
read every event (the fan-out then costs every watcher every event). They
are spread --watchers-per-token streams to a
token and --watchers-per-conn to a connection, under the control plane's
default stream caps (64 per token, 128 per connection); raise those with
its --max-streams-per-token / --max-streams-per-connection to put more on
one. The control plane closes a slow watcher once it lags too far (4,096
events by default); the figures say how many it closed.

CPU: with --debug-addr (the control plane's --debug-listen address) the
bench reads the control plane's own CPU counters (/debug/process) just
before and just after the throughput phase, and reports its CPU per cycle
(user plus system CPU over the phase / tasks completed) and the cores it
kept busy; the counters come from the process itself, so this works with
the bench on another machine or outside the control plane's container.
The bench's own CPU per cycle over the same phase is shown beside it. The
wake-up phase is outside the window.

Preload: --preload N creates N READY tasks of --preload-role (default
"<run>-preload", a role no agent has) before the throughput phase, at a
higher priority than the bench's tasks, so they stand ahead of them in
claim order: a backlog of another role, to see whether it slows claims.
They are created 1000 per call and carry the labels bench=<run> and
preload=yes. At the end, on error too, the bench claims and completes them
100 a call under an agent token of that role, as it finishes its own
tasks, and moves any left to FAILED. They are READY all the while: real
agents of --preload-role would take them, so name a role nobody has.

Each simulated agent calls with an agent token of its own, issued for the
run and revoked at its end, so the figures are those of real agents (an
operator's calls are also audited); bench therefore needs an operator
token.

Replicas: with --addrs the agents are spread over several control planes
sharing one database (agent i on address i mod N), and the tasks are
created through the first. --wake-addr makes the wake-up phase's agents
wait on one replica while its tasks are created on the first address: the
wake-up then crosses replicas (LISTEN/NOTIFY on PostgreSQL).

Progress goes to standard error; the figures to standard output (-o json
for a JSON object). The queue must not be paused.`,
		Example: `  factory bench queue --agents 8 --tasks 5000
  factory bench queue --agents 32 --tasks 20000 --batch 10 --wait-probes 50 -o json
  factory bench queue --agents 8 --tasks 5000 --watchers 2000 --watcher-mode slow
  factory bench queue --agents 8 --tasks 2000 --preload 100000 --debug-addr 127.0.0.1:6060
  factory bench queue --agents 32 --tasks 20000 --stream --debug-addr 127.0.0.1:6060
  factory bench queue --addrs 127.0.0.1:7420,127.0.0.1:7421,127.0.0.1:7422 \
    --wake-addr 127.0.0.1:7421 --agents 64 --tasks 20000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case cfg.agents < 1:
				return usageErrorf("--agents must be at least 1")
			case cfg.tasks < 1:
				return usageErrorf("--tasks must be at least 1")
			case cfg.batch < 1 || cfg.batch > 100:
				return usageErrorf("--batch must be 1 to 100")
			case cfg.probes < 0:
				return usageErrorf("--wait-probes must not be negative")
			case cfg.conns < 0:
				return usageErrorf("--conns must not be negative")
			case slices.Contains(cfg.addrs, ""):
				return usageErrorf("--addrs: an empty address")
			case cfg.watchers < 0:
				return usageErrorf("--watchers must not be negative")
			case !slices.Contains([]string{"idle", "slow", "busy"}, cfg.watcherMode):
				return usageErrorf("--watcher-mode must be idle, slow or busy, got %q", cfg.watcherMode)
			case cfg.watchersPerToken < 1 || cfg.watchersPerConn < 1:
				return usageErrorf("--watchers-per-token and --watchers-per-conn must be at least 1")
			}
			if err := validatePreload(cfg.preload, cfg.preloadRole); err != nil {
				return err
			}
			if len(cfg.addrs) == 0 {
				cfg.addrs = []string{a.addr}
			}
			if cfg.conns == 0 {
				// gRPC servers allow about 100 concurrent streams per
				// connection; stay well under so agents never queue client-side.
				cfg.conns = max(1, (cfg.agents/len(cfg.addrs)+cfg.probes+49)/50)
			}
			return a.runBench(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.agents, "agents", 4, "simulated agents claiming at once")
	f.IntVar(&cfg.tasks, "tasks", 1000, "tasks to create and complete")
	f.IntVar(&cfg.batch, "batch", 1, "tasks per claim (max_tasks); above 1, completions go through CompleteTasks")
	f.IntVar(&cfg.probes, "wait-probes", 20, "waiting agents (and tasks) in the wake-up phase; 0 skips it")
	f.DurationVar(&cfg.probeInterval, "probe-interval", 100*time.Millisecond, "pause between wake-up tasks")
	f.IntVar(&cfg.conns, "conns", 0, "gRPC connections to each address, shared among its agents (0: one per 50 agents)")
	f.StringSliceVar(&cfg.addrs, "addrs", nil, "control-plane replicas to spread the agents over, comma-separated or repeated (default: --addr); tasks are created through the first")
	f.IntVar(&cfg.watchers, "watchers", 0, "WatchTasks streams to hold open during the run (0: none)")
	f.StringVar(&cfg.watcherMode, "watcher-mode", "idle", "idle (watchers wait for a role no task has), slow (they watch everything and never read) or busy (they watch everything and read it)")
	f.IntVar(&cfg.watchersPerToken, "watchers-per-token", 50, "watch streams per watcher token (keep under the control plane's --max-streams-per-token)")
	f.IntVar(&cfg.watchersPerConn, "watchers-per-conn", 100, "watch streams per connection (keep under the control plane's --max-streams-per-connection)")
	f.StringVar(&cfg.wakeAddr, "wake-addr", "", "replica where the wake-up phase's agents wait (default: spread like the agents); its tasks are created through the first address, so another replica here measures the cross-replica wake-up")
	f.StringVar(&cfg.debugAddr, "debug-addr", "", "the control plane's debug listener (its --debug-listen), for its CPU per cycle")
	f.IntVar(&cfg.preload, "preload", 0, "READY tasks of --preload-role to create ahead of the bench's own (a backlog of another role); removed at the end")
	f.StringVar(&cfg.preloadRole, "preload-role", "", `role of the preloaded tasks (default "<run>-preload"); they are READY, so real agents of this role would take them: name a role nobody has`)
	f.BoolVar(&cfg.stream, "stream", false, "claim and complete over one Work stream per agent (a completion and the next claim in one round trip) instead of unary calls")
	return cmd
}

// benchRolePattern is what the control plane accepts as a task's role.
var benchRolePattern = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

// validatePreload checks --preload and --preload-role.
func validatePreload(n int, role string) error {
	switch {
	case n < 0:
		return usageErrorf("--preload must not be negative")
	case role != "" && n == 0:
		return usageErrorf("--preload-role needs --preload")
	case role != "" && !benchRolePattern.MatchString(role):
		return usageErrorf("--preload-role %q: a role is 1 to 128 letters, digits, '.', '_', ':', '/', '-'", role)
	}
	return nil
}

// preloadRoleFor is the preloaded tasks' role in run: --preload-role, or
// one no agent has. It must not be the run's own role, or the bench's
// agents would claim the backlog as their work.
func preloadRoleFor(run, role string) (string, error) {
	if role == "" {
		return run + "-preload", nil
	}
	if role == run {
		return "", usageErrorf("--preload-role %q is this run's own role: its agents would claim the preloaded tasks", role)
	}
	return role, nil
}

func (a *app) runBench(cmd *cobra.Command, cfg benchConfig) (err error) {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()

	// Connection j of every address, then j+1: agent i's client,
	// clients[i%len(clients)], is on address i%len(addrs).
	clients := make([]factoryv1.QueueServiceClient, cfg.conns*len(cfg.addrs))
	var accessClient factoryv1.AccessServiceClient
	for i := range clients {
		conn, err := a.dialAddr(cfg.addrs[i%len(cfg.addrs)])
		if err != nil {
			return err
		}
		defer conn.Close()
		clients[i] = factoryv1.NewQueueServiceClient(conn)
		if i == 0 {
			accessClient = factoryv1.NewAccessServiceClient(conn)
		}
	}
	q := clients[0]

	stats, err := q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		return err
	}
	if stats.GetPaused() {
		return errors.New("the queue is paused: bench tasks would never be claimable; resume it or bench another control plane")
	}

	if n, err := countRolelessReady(ctx, q); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("%d READY task(s) have no role, and any agent, a bench agent too, may claim those; give them a role or bench another control plane", n)
	}

	run := "bench-" + randomHex(6)
	preloadRole := ""
	if cfg.preload > 0 {
		if preloadRole, err = preloadRoleFor(run, cfg.preloadRole); err != nil {
			return err
		}
	}
	if cfg.debugAddr != "" {
		// Before anything is created: a wrong address fails the run now,
		// not after a long preload.
		if _, err := readProcessDebug(ctx, cfg.debugAddr); err != nil {
			return err
		}
	}
	waiters := clients
	if cfg.wakeAddr != "" && cfg.probes > 0 {
		waiters = make([]factoryv1.QueueServiceClient, cfg.conns)
		for i := range waiters {
			conn, err := a.dialAddr(cfg.wakeAddr)
			if err != nil {
				return err
			}
			defer conn.Close()
			waiters[i] = factoryv1.NewQueueServiceClient(conn)
		}
	}

	res := benchResult{Run: run, Role: run, Agents: cfg.agents, Tasks: cfg.tasks, Batch: cfg.batch, Stream: cfg.stream, Connections: len(clients),
		Addrs: cfg.addrs, WakeAddr: cfg.wakeAddr, Preload: cfg.preload, PreloadRole: preloadRole}
	progress := a.stderr()
	fmt.Fprintf(progress, "bench %s: %d agents%s, %d tasks, batch %d, %d connection(s) to %s\n", run, cfg.agents, streamNote(cfg.stream, " on Work streams"), cfg.tasks, cfg.batch, len(clients), strings.Join(cfg.addrs, ", "))

	// Whatever happens, leave no bench task claimable by anyone.
	defer func() {
		if err != nil {
			cleanupBench(q, run, a.stderr())
		}
	}()

	tokens, err := mintBenchTokens(ctx, accessClient, run, cfg)
	// Revoke whatever was issued, even if issuing stopped half way.
	defer revokeBenchTokens(accessClient, tokens, a.stderr())
	if err != nil {
		return err
	}

	if cfg.preload > 0 {
		// Before the watchers open: the backlog is the stage, not part of
		// what they are to hear.
		fmt.Fprintf(progress, "preloading %d READY tasks of role %s\n", cfg.preload, preloadRole)
		start := time.Now()
		created, err := createPreloadTasks(ctx, q, run, preloadRole, cfg.preload, progress)
		// Whatever happens, on success too, the backlog goes again.
		defer removePreloadTasks(q, accessClient, run, preloadRole, created, a.stderr())
		if err != nil {
			return err
		}
		res.PreloadSeconds = time.Since(start).Seconds()
		fmt.Fprintf(progress, "preloaded %d tasks in %.2fs\n", cfg.preload, res.PreloadSeconds)
	}

	var w *benchWatchers
	if cfg.watchers > 0 {
		wctx, stopWatchers := context.WithCancel(ctx)
		w, err = a.startBenchWatchers(wctx, accessClient, run, cfg, progress)
		defer func() {
			stopWatchers()
			if w != nil {
				w.wg.Wait()
				defer revokeBenchTokens(accessClient, w.tokens, a.stderr())
			}
		}()
		if err != nil {
			return err
		}
		res.Watchers = &w.stats
	}

	start := time.Now()
	if err = createBenchTasks(ctx, q, run, cfg.tasks); err != nil {
		return err
	}
	res.CreateSeconds = time.Since(start).Seconds()
	fmt.Fprintf(progress, "created %d tasks in %.2fs\n", cfg.tasks, res.CreateSeconds)

	// The CPU window is the claim/complete phase alone: the server's
	// counters are read just outside the bench's own.
	var cpu benchCPU
	if cfg.debugAddr != "" {
		if cpu.serverBefore, err = readProcessDebug(ctx, cfg.debugAddr); err != nil {
			return err
		}
	}
	cpu.clientBefore, cpu.clientOK = selfCPU()
	var claimLat []time.Duration
	claimLat, res.CycleSeconds, res.EmptyClaims, res.CompleteErrors, err = runBenchAgents(ctx, clients, run, cfg, tokens.secrets, a.timeout, progress)
	if err != nil {
		return err
	}
	var clientOK bool
	cpu.clientAfter, clientOK = selfCPU()
	cpu.clientOK = cpu.clientOK && clientOK
	if cfg.debugAddr != "" {
		if cpu.serverAfter, err = readProcessDebug(ctx, cfg.debugAddr); err != nil {
			return err
		}
	}
	cpu.apply(&res, int64(cfg.tasks))
	res.CyclesPerSec = float64(cfg.tasks) / res.CycleSeconds
	res.ClaimLatency = summarize(claimLat)

	if cfg.probes > 0 {
		fmt.Fprintf(progress, "wake-up phase: %d waiting agents\n", cfg.probes)
		var wake []time.Duration
		if wake, err = runWakeProbes(ctx, waiters, q, run, cfg, tokens.secrets, a.timeout); err != nil {
			return err
		}
		res.WakeupLatency = summarize(wake)
	}

	if w != nil {
		if cfg.watcherMode == "slow" {
			w.settle(2 * time.Second)
		}
		res.Watchers.ClosedBehind, res.Watchers.Events = w.closedBehind.Load(), w.events.Load()
	}
	if a.jsonOutput() {
		return writeJSON(a.stdout(), res)
	}
	return writeBenchTable(a.stdout(), &res)
}

// writeBenchTable prints a run's figures as the table bench queue shows.
func writeBenchTable(w io.Writer, res *benchResult) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "run\t%s (%d agents, %d tasks, batch %d, %d connection(s)%s)\n", res.Run, res.Agents, res.Tasks, res.Batch, res.Connections, streamNote(res.Stream, ", stream"))
	fmt.Fprintf(tw, "replicas\t%s\n", strings.Join(res.Addrs, ", "))
	if res.Preload > 0 {
		fmt.Fprintf(tw, "preload\t%d READY tasks of role %s ahead of the bench's, created in %.2fs (%.0f tasks/s)\n",
			res.Preload, res.PreloadRole, res.PreloadSeconds, float64(res.Preload)/res.PreloadSeconds)
	}
	fmt.Fprintf(tw, "create\t%.2fs (%.0f tasks/s)\n", res.CreateSeconds, float64(res.Tasks)/res.CreateSeconds)
	fmt.Fprintf(tw, "cycles/s\t%.1f (claim+complete of %d tasks in %.2fs)\n", res.CyclesPerSec, res.Tasks, res.CycleSeconds)
	fmt.Fprintf(tw, "control plane CPU\t%s\n", res.cpuLine())
	fmt.Fprintf(tw, "claim latency\tp50 %.2fms  p99 %.2fms  max %.2fms  (%d calls, %d empty)\n",
		res.ClaimLatency.P50ms, res.ClaimLatency.P99ms, res.ClaimLatency.Maxms, res.ClaimLatency.Count, res.EmptyClaims)
	if res.WakeupLatency.Count > 0 {
		fmt.Fprintf(tw, "wake-up latency\tp50 %.2fms  p99 %.2fms  max %.2fms  (%d probes)\n",
			res.WakeupLatency.P50ms, res.WakeupLatency.P99ms, res.WakeupLatency.Maxms, res.WakeupLatency.Count)
	}
	if ws := res.Watchers; ws != nil {
		fmt.Fprintf(tw, "watchers\t%d %s (%d tokens, %d connections): %d open, %d refused, %d closed as behind, %d events received\n",
			ws.Requested, ws.Mode, ws.Tokens, ws.Conns, ws.Open, ws.Refused, ws.ClosedBehind, ws.Events)
	}
	if res.CompleteErrors > 0 {
		fmt.Fprintf(tw, "complete errors\t%d\n", res.CompleteErrors)
	}
	return tw.Flush()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func createBenchTasks(ctx context.Context, q factoryv1.QueueServiceClient, run string, n int) error {
	_, err := createTasksBatched(ctx, q, n, func(i int) *factoryv1.CreateTaskRequest {
		return &factoryv1.CreateTaskRequest{
			Title:  fmt.Sprintf("%s task %d", run, i),
			Kind:   "bench",
			Role:   run,
			Labels: map[string]string{"bench": run},
		}
	}, nil)
	if err != nil {
		return fmt.Errorf("create bench tasks: %w", err)
	}
	return nil
}

// createTasksBatched creates n tasks, task(i) the i-th, 1000 per
// CreateTasks call; after each call it tells progress how many exist. It
// returns how many were created, also on error.
func createTasksBatched(ctx context.Context, q factoryv1.QueueServiceClient, n int, task func(i int) *factoryv1.CreateTaskRequest, progress func(created int)) (int, error) {
	const perCall = 1000
	created := 0
	for start := 0; start < n; start += perCall {
		reqs := make([]*factoryv1.CreateTaskRequest, 0, min(perCall, n-start))
		for i := start; i < min(start+perCall, n); i++ {
			reqs = append(reqs, task(i))
		}
		if _, err := q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
			return created, err
		}
		created += len(reqs)
		if progress != nil {
			progress(created)
		}
	}
	return created, nil
}

// preloadPriority puts the preloaded tasks ahead of the bench's own
// (priority 0) in claim order, and at the top, so that the cleanup's
// claims by their role meet them before any real task of that role.
const preloadPriority = 1000

// preloadLabels mark a run's preloaded tasks, so they can be found again.
func preloadLabels(run string) map[string]string {
	return map[string]string{"bench": run, "preload": "yes"}
}

// isPreloadTask says whether t is one of run's preloaded tasks.
func isPreloadTask(t *factoryv1.Task, run, role string) bool {
	return t.GetRole() == role && t.GetLabels()["bench"] == run && t.GetLabels()["preload"] == "yes"
}

// createPreloadTasks creates n READY tasks of role ahead of the bench's,
// telling progress every 10,000; it returns how many were created, also
// on error.
func createPreloadTasks(ctx context.Context, q factoryv1.QueueServiceClient, run, role string, n int, progress io.Writer) (int, error) {
	const every = 10000
	next := every
	created, err := createTasksBatched(ctx, q, n, func(i int) *factoryv1.CreateTaskRequest {
		return &factoryv1.CreateTaskRequest{
			Title:    fmt.Sprintf("%s preload %d", run, i),
			Kind:     "bench",
			Role:     role,
			Priority: preloadPriority,
			Labels:   preloadLabels(run),
		}
	}, func(created int) {
		if created >= next && created < n {
			fmt.Fprintf(progress, "  %d/%d preloaded\n", created, n)
			next += every
		}
	})
	if err != nil {
		return created, fmt.Errorf("preload tasks: %w", err)
	}
	return created, nil
}

// removePreloadTasks finishes a run's preloaded tasks as the bench finishes
// its own: an agent token of their role claims them 100 a call and
// completes them with CompleteTasks, a few claimers at once, which takes
// seconds for 100,000 where a move per task would take minutes. It claims
// no more than were created, so it takes no real task of that role queued
// behind them; should it meet one anyway (queued ahead of them), it hands
// it back and stops claiming. Whatever is left is moved to FAILED one by
// one. It runs on its own deadline: the command's context may be what was
// cancelled.
func removePreloadTasks(q factoryv1.QueueServiceClient, acc factoryv1.AccessServiceClient, run, role string, created int, log io.Writer) {
	if created == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	completed := 0
	agent := run + "-preload-cleaner"
	resp, err := acc.CreateToken(ctx, &factoryv1.CreateTokenRequest{
		Role: factoryv1.Role_ROLE_AGENT, Subject: agent, Description: "factory bench " + run + " preload cleanup",
		ExpiresIn: durationpb.New(time.Hour), Roles: []string{role},
	})
	if err != nil {
		fmt.Fprintf(log, "bench preload cleanup: issuing its agent token: %v\n", err)
	} else {
		defer revokeBenchTokens(acc, &benchTokens{ids: []string{resp.GetToken().GetId()}}, log)
		completed = drainPreloadTasks(ctx, withCallToken(ctx, resp.GetSecret()), q, run, role, agent, created, log)
	}
	moved := failBenchTasks(ctx, q, &factoryv1.ListTasksRequest{
		Role: role, Labels: []string{"bench=" + run, "preload=yes"},
	}, "bench preload removed", log)
	fmt.Fprintf(log, "removed %d preloaded tasks in %.2fs (%d completed, %d moved to FAILED)\n", completed+moved, time.Since(start).Seconds(), completed, moved)
}

// drainPreloadTasks claims and completes up to n of run's preloaded tasks
// with agentCtx (an agent token of role) and returns how many it
// completed. Operator calls (handing a real task back) use ctx.
func drainPreloadTasks(ctx, agentCtx context.Context, q factoryv1.QueueServiceClient, run, role, agent string, n int, log io.Writer) int {
	// At most claimers·perClaim leases are held at once: within the
	// control plane's default per-agent lease cap (256).
	const claimers, perClaim = 4, 64
	var left, completed atomic.Int64
	var stop atomic.Bool
	left.Store(int64(n))
	// take reserves up to perClaim of what is left to claim.
	take := func() int64 {
		for {
			l := left.Load()
			if l <= 0 || stop.Load() {
				return 0
			}
			if k := min(perClaim, l); left.CompareAndSwap(l, l-k) {
				return k
			}
		}
	}
	var wg sync.WaitGroup
	for range claimers {
		wg.Go(func() {
			for k := take(); k > 0; k = take() {
				resp, err := q.ClaimTask(agentCtx, &factoryv1.ClaimTaskRequest{
					Agent: agent, Roles: []string{role}, MaxTasks: int32(k), LeaseDuration: durationpb.New(5 * time.Minute),
				})
				if err != nil {
					fmt.Fprintf(log, "bench preload cleanup: claim: %v\n", err)
					stop.Store(true)
					return
				}
				if len(resp.GetTasks()) == 0 {
					stop.Store(true)
					return
				}
				var mine []*factoryv1.Task
				for _, t := range resp.GetTasks() {
					if isPreloadTask(t, run, role) {
						mine = append(mine, t)
						continue
					}
					// A real task queued ahead of the rest: claiming on
					// would take more of them.
					stop.Store(true)
					if err := handBack(ctx, q, run, t); err != nil {
						fmt.Fprintf(log, "bench preload cleanup: %v\n", err)
					}
				}
				left.Add(k - int64(len(mine)))
				for chunk := range slices.Chunk(mine, perClaim) {
					done, err := completeBenchTasks(agentCtx, q, agent, chunk)
					completed.Add(int64(done))
					if err != nil {
						fmt.Fprintf(log, "bench preload cleanup: complete: %v\n", err)
						stop.Store(true)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return int(completed.Load())
}

// runBenchAgents runs the claim/complete phase and returns every ClaimTask
// latency and the phase's length. With cfg.stream each agent works over a
// Work stream (streamBenchAgent) instead.
func runBenchAgents(ctx context.Context, clients []factoryv1.QueueServiceClient, run string, cfg benchConfig, tokens map[string]string, stall time.Duration, progress io.Writer) (lat []time.Duration, seconds float64, empty, completeErrs int64, err error) {
	var claimed, completed atomic.Int64
	latencies := make([][]time.Duration, cfg.agents)
	total := int64(cfg.tasks)

	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for i := range cfg.agents {
		q := clients[i%len(clients)]
		agent := benchAgent(run, i)
		gctx := withCallToken(gctx, tokens[agent])
		if cfg.stream {
			a := &streamBenchAgent{
				q: q, run: run, agent: agent, batch: cfg.batch, total: total,
				claimed: &claimed, completed: &completed, empty: &empty, completeErrs: &completeErrs,
				latencies: &latencies[i],
			}
			g.Go(func() error { return a.work(gctx) })
			continue
		}
		g.Go(func() error {
			for claimed.Load() < total {
				t0 := time.Now()
				resp, err := q.ClaimTask(gctx, &factoryv1.ClaimTaskRequest{
					Agent: agent, Roles: []string{run}, MaxTasks: int32(cfg.batch), LeaseDuration: durationpb.New(5 * time.Minute),
				})
				latencies[i] = append(latencies[i], time.Since(t0))
				if err != nil {
					return fmt.Errorf("%s: claim: %w", agent, err)
				}
				tasks, err := keepBenchTasks(gctx, q, run, resp.GetTasks())
				if err != nil {
					return err
				}
				if len(resp.GetTasks()) == 0 {
					// Everything left is held by other agents; the loop ends
					// once their claims are counted.
					atomic.AddInt64(&empty, 1)
					continue
				}
				if len(tasks) == 0 {
					continue
				}
				claimed.Add(int64(len(tasks)))
				n, err := completeBenchTasks(gctx, q, agent, tasks)
				if err != nil {
					return fmt.Errorf("%s: complete: %w", agent, err)
				}
				atomic.AddInt64(&completeErrs, int64(len(tasks)-n))
				completed.Add(int64(n))
			}
			return nil
		})
	}

	done := make(chan struct{})
	stalled := make(chan struct{})
	// The ticker's last line must be written before the caller writes
	// progress again: ticking is joined once the phase ends.
	var ticking sync.WaitGroup
	ticking.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastChange := int64(-1), time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				c := completed.Load()
				el := time.Since(start).Seconds()
				fmt.Fprintf(progress, "  %d/%d done, %.0f/s\n", c, total, float64(c)/el)
				if c != last {
					last, lastChange = c, time.Now()
				} else if time.Since(lastChange) > stall {
					close(stalled)
					return
				}
			}
		}
	})
	waitErr := make(chan error, 1)
	go func() { waitErr <- g.Wait() }()
	select {
	case err = <-waitErr:
	case <-stalled:
		err = fmt.Errorf("no task completed for %s: giving up", stall)
	}
	close(done)
	seconds = time.Since(start).Seconds()
	ticking.Wait()
	if err != nil {
		return nil, 0, 0, 0, err
	}
	if c := completed.Load(); c != total {
		return nil, 0, 0, 0, fmt.Errorf("completed %d of %d tasks (%d completions refused)", c, total, completeErrs)
	}
	for _, l := range latencies {
		lat = append(lat, l...)
	}
	return lat, seconds, empty, completeErrs, nil
}

// countRolelessReady counts READY tasks with no role: ClaimTask hands those
// to any agent, so the bench's agents would take real work.
func countRolelessReady(ctx context.Context, q factoryv1.QueueServiceClient) (int, error) {
	req := &factoryv1.ListTasksRequest{States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_READY}, PageSize: 1000}
	n := 0
	for {
		resp, err := q.ListTasks(ctx, req)
		if err != nil {
			return 0, err
		}
		for _, t := range resp.GetTasks() {
			if t.GetRole() == "" {
				n++
			}
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return n, nil
		}
	}
}

// keepBenchTasks returns the claimed tasks that belong to this run and
// hands back any other: a role-less task that became READY during the run.
func keepBenchTasks(ctx context.Context, q factoryv1.QueueServiceClient, run string, tasks []*factoryv1.Task) ([]*factoryv1.Task, error) {
	kept := tasks[:0:0]
	for _, t := range tasks {
		if t.GetRole() == run {
			kept = append(kept, t)
			continue
		}
		if err := handBack(ctx, q, run, t); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// handBack returns a real task a bench agent claimed to READY at once.
func handBack(ctx context.Context, q factoryv1.QueueServiceClient, run string, t *factoryv1.Task) error {
	_, err := q.MoveTask(ctx, &factoryv1.MoveTaskRequest{
		TaskId: t.GetId(), To: factoryv1.TaskState_TASK_STATE_READY,
		Reason: fmt.Sprintf("claimed by %s (it has no role); handed back untouched", run),
	})
	if err != nil {
		return fmt.Errorf("hand back task %s claimed by the bench: %w", t.GetId(), err)
	}
	return nil
}

// completeBenchTasks completes the claimed tasks and returns how many were
// completed.
func completeBenchTasks(ctx context.Context, q factoryv1.QueueServiceClient, agent string, tasks []*factoryv1.Task) (int, error) {
	if len(tasks) == 1 {
		t := tasks[0]
		_, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: t.GetId(), Agent: agent, FencingToken: t.GetLease().GetToken()})
		if err != nil {
			return 0, err
		}
		return 1, nil
	}
	items := make([]*factoryv1.CompleteTaskRequest, len(tasks))
	for i, t := range tasks {
		items[i] = &factoryv1.CompleteTaskRequest{TaskId: t.GetId(), Agent: agent, FencingToken: t.GetLease().GetToken()}
	}
	resp, err := q.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: items})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range resp.GetResults() {
		if r.GetErrorCode() == "" {
			n++
		}
	}
	return n, nil
}

// runWakeProbes measures how fast a waiting claimer gets a new task: the
// waiters call through clients, the tasks are created through creator.
func runWakeProbes(ctx context.Context, clients []factoryv1.QueueServiceClient, creator factoryv1.QueueServiceClient, run string, cfg benchConfig, tokens map[string]string, timeout time.Duration) ([]time.Duration, error) {
	const wait = 10 * time.Second
	var (
		mu      sync.Mutex
		started = map[string]time.Time{}
		lat     []time.Duration
	)
	g, gctx := errgroup.WithContext(ctx)
	var parked sync.WaitGroup
	parked.Add(cfg.probes)
	for i := range cfg.probes {
		q := clients[i%len(clients)]
		agent := benchWaiter(run, i)
		gctx := withCallToken(gctx, tokens[agent])
		g.Go(func() error {
			first := true
			deadline := time.Now().Add(time.Duration(cfg.probes)*cfg.probeInterval + 2*wait)
			for time.Now().Before(deadline) {
				cctx, cancel := context.WithTimeout(gctx, wait+timeout)
				if first {
					parked.Done()
					first = false
				}
				resp, err := q.ClaimTask(cctx, &factoryv1.ClaimTaskRequest{
					Agent: agent, Roles: []string{run}, Wait: durationpb.New(wait), MaxTasks: 1,
				}, grpc.WaitForReady(true))
				got := time.Now()
				cancel()
				if err != nil {
					return fmt.Errorf("%s: claim: %w", agent, err)
				}
				if len(resp.GetTasks()) == 0 {
					continue // another waiter took it; wait again
				}
				t := resp.GetTasks()[0]
				if t.GetRole() != run {
					if err := handBack(gctx, q, run, t); err != nil {
						return err
					}
					continue
				}
				mu.Lock()
				lat = append(lat, got.Sub(started[t.GetId()]))
				mu.Unlock()
				_, err = q.CompleteTask(gctx, &factoryv1.CompleteTaskRequest{TaskId: t.GetId(), Agent: agent, FencingToken: t.GetLease().GetToken()})
				return err
			}
			return fmt.Errorf("%s: no task within %s", agent, time.Duration(cfg.probes)*cfg.probeInterval+2*wait)
		})
	}
	g.Go(func() error {
		parked.Wait()
		// The waiters' calls must reach the server and park before the
		// first task, or the first probes measure a claim, not a wake-up.
		select {
		case <-time.After(500 * time.Millisecond):
		case <-gctx.Done():
			return gctx.Err()
		}
		q := creator
		for i := range cfg.probes {
			id := fmt.Sprintf("%s-wake-%d", run, i)
			mu.Lock()
			started[id] = time.Now()
			mu.Unlock()
			if _, err := q.CreateTask(gctx, &factoryv1.CreateTaskRequest{
				TaskId: id, Title: run + " wake-up probe", Kind: "bench", Role: run, Labels: map[string]string{"bench": run},
			}); err != nil {
				return fmt.Errorf("create probe: %w", err)
			}
			select {
			case <-time.After(cfg.probeInterval):
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return lat, nil
}

// summarize computes nearest-rank percentiles.
func summarize(d []time.Duration) latencySummary {
	if len(d) == 0 {
		return latencySummary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return math.Round(float64(x)/1e3) / 1e3 }
	return latencySummary{Count: len(s), P50ms: ms(percentile(s, 0.50)), P99ms: ms(percentile(s, 0.99)), Maxms: ms(s[len(s)-1])}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	idx := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(idx, len(sorted)-1))]
}

// cleanupBench sends every unfinished task of an aborted run to FAILED, so
// no bench task lingers in a real queue. It runs on its own deadline: the
// command's context may be what was cancelled.
func cleanupBench(q factoryv1.QueueServiceClient, run string, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	killed := failBenchTasks(ctx, q, &factoryv1.ListTasksRequest{Role: run, Labels: []string{"bench=" + run}}, "bench aborted", log)
	if killed > 0 {
		fmt.Fprintf(log, "bench cleanup: %d unfinished bench task(s) moved to FAILED\n", killed)
	}
}

// failBenchTasks moves every unfinished task req matches (role and
// labels) to FAILED with reason and returns how many it moved.
func failBenchTasks(ctx context.Context, q factoryv1.QueueServiceClient, req *factoryv1.ListTasksRequest, reason string, log io.Writer) int {
	req.PageSize = 1000
	req.States = []factoryv1.TaskState{
		factoryv1.TaskState_TASK_STATE_BACKLOG, factoryv1.TaskState_TASK_STATE_READY,
		factoryv1.TaskState_TASK_STATE_IN_PROGRESS, factoryv1.TaskState_TASK_STATE_PAUSED,
	}
	// Collect first: moving tasks while paging through them would shift
	// the pages.
	var ids []string
	for {
		resp, err := q.ListTasks(ctx, req)
		if err != nil {
			fmt.Fprintf(log, "bench cleanup: %v\n", err)
			return 0
		}
		for _, t := range resp.GetTasks() {
			ids = append(ids, t.GetId())
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	moved := 0
	for _, id := range ids {
		if _, err := q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: id, To: factoryv1.TaskState_TASK_STATE_FAILED, Reason: reason}); err == nil {
			moved++
		}
	}
	return moved
}

func benchAgent(run string, i int) string  { return fmt.Sprintf("%s-agent-%d", run, i) }
func benchWaiter(run string, i int) string { return fmt.Sprintf("%s-waiter-%d", run, i) }

// benchTokens are the agent tokens of one run.
type benchTokens struct {
	secrets map[string]string // by agent name
	ids     []string
}

// mintBenchTokens issues an agent token for every simulated agent, so that
// their calls take the path real agents take: scoped to themselves and
// not audited.
func mintBenchTokens(ctx context.Context, c factoryv1.AccessServiceClient, run string, cfg benchConfig) (*benchTokens, error) {
	tokens := &benchTokens{secrets: map[string]string{}}
	names := make([]string, 0, cfg.agents+cfg.probes)
	for i := range cfg.agents {
		names = append(names, benchAgent(run, i))
	}
	for i := range cfg.probes {
		names = append(names, benchWaiter(run, i))
	}
	for _, name := range names {
		resp, err := c.CreateToken(ctx, &factoryv1.CreateTokenRequest{
			Role: factoryv1.Role_ROLE_AGENT, Subject: name, Description: "factory bench " + run,
			ExpiresIn: durationpb.New(24 * time.Hour),
			// The run's tasks have the run's role, the only one its agents claim.
			Roles: []string{run},
		})
		if err != nil {
			return tokens, fmt.Errorf("issuing the bench agents' tokens (bench needs an operator token): %w", err)
		}
		tokens.secrets[name] = resp.GetSecret()
		tokens.ids = append(tokens.ids, resp.GetToken().GetId())
	}
	return tokens, nil
}

// revokeBenchTokens ends the run's tokens. It runs on its own deadline:
// the command's context may be what was cancelled.
func revokeBenchTokens(c factoryv1.AccessServiceClient, tokens *benchTokens, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range tokens.ids {
		if _, err := c.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: id}); err != nil {
			fmt.Fprintf(log, "bench: revoking agent token %s: %v\n", id, err)
		}
	}
}

// dialAddr dials addr as the global flags say to dial --addr: the same
// TLS settings and token rules, judged for addr.
func (a *app) dialAddr(addr string) (*grpc.ClientConn, error) {
	other := *a
	other.addr = addr
	return other.dial()
}

// benchWatchers are the --watchers streams of a run.
type benchWatchers struct {
	stats        watcherStats
	tokens       *benchTokens
	wg           sync.WaitGroup
	closedBehind atomic.Int64
	events       atomic.Int64
	// drain, closed after the run, has slow watchers read what they were
	// sent, to learn whether the control plane closed them.
	drain chan struct{}
}

// settle has the slow watchers read what is left and waits a little for
// those the control plane closed to say so.
func (w *benchWatchers) settle(within time.Duration) {
	close(w.drain)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
	}
}

func benchWatcher(run string, i int) string { return fmt.Sprintf("%s-watcher-%d", run, i) }

// startBenchWatchers issues the watcher tokens, opens the watch streams and
// returns once every stream is open (or refused). The streams end with
// ctx; the caller waits on wg, then revokes tokens.
func (a *app) startBenchWatchers(ctx context.Context, acc factoryv1.AccessServiceClient, run string, cfg benchConfig, progress io.Writer) (*benchWatchers, error) {
	w := &benchWatchers{tokens: &benchTokens{secrets: map[string]string{}}, drain: make(chan struct{})}
	nTokens := (cfg.watchers + cfg.watchersPerToken - 1) / cfg.watchersPerToken
	nConns := (cfg.watchers + cfg.watchersPerConn - 1) / cfg.watchersPerConn
	w.stats = watcherStats{Requested: cfg.watchers, Mode: cfg.watcherMode, Tokens: nTokens, Conns: nConns}
	fmt.Fprintf(progress, "opening %d %s watchers (%d tokens, %d connections)\n", cfg.watchers, cfg.watcherMode, nTokens, nConns)
	secrets := make([]string, nTokens)
	for i := range secrets {
		resp, err := acc.CreateToken(ctx, &factoryv1.CreateTokenRequest{
			Role: factoryv1.Role_ROLE_AGENT, Subject: benchWatcher(run, i), Description: "factory bench " + run + " watcher",
			ExpiresIn: durationpb.New(24 * time.Hour),
		})
		if err != nil {
			return w, fmt.Errorf("issuing the bench watchers' tokens: %w", err)
		}
		secrets[i] = resp.GetSecret()
		w.tokens.ids = append(w.tokens.ids, resp.GetToken().GetId())
	}
	var extra []grpc.DialOption
	if cfg.watcherMode == "slow" {
		// The smallest windows: the server's sends block after 64 KiB
		// unread, as with a client that stopped reading.
		extra = append(extra, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	}
	conns := make([]factoryv1.QueueServiceClient, nConns)
	for i := range conns {
		conn, err := a.dialAddrWith(a.addr, extra...)
		if err != nil {
			return w, err
		}
		context.AfterFunc(ctx, func() { conn.Close() })
		conns[i] = factoryv1.NewQueueServiceClient(conn)
	}
	var opened sync.WaitGroup
	opened.Add(cfg.watchers)
	for i := range cfg.watchers {
		q := conns[i/cfg.watchersPerConn]
		wctx := withCallToken(ctx, secrets[i/cfg.watchersPerToken])
		w.wg.Go(func() {
			once := sync.OnceFunc(opened.Done)
			defer once()
			req := &factoryv1.WatchTasksRequest{ChangesOnly: true}
			if cfg.watcherMode == "idle" {
				req.Role = run + "-idle"
			}
			stream, err := q.WatchTasks(wctx, req)
			if err == nil {
				_, err = stream.Recv() // SYNCED: open
			}
			if err != nil {
				atomic.AddInt64(&w.stats.Refused, 1)
				return
			}
			atomic.AddInt64(&w.stats.Open, 1)
			once()
			if cfg.watcherMode == "slow" {
				select {
				case <-ctx.Done():
					return
				case <-w.drain:
				}
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if status.Code(err) == codes.ResourceExhausted {
						w.closedBehind.Add(1)
					}
					return
				}
				if cfg.watcherMode != "slow" {
					w.events.Add(1)
				}
			}
		})
	}
	opened.Wait()
	fmt.Fprintf(progress, "%d watchers open, %d refused\n", atomic.LoadInt64(&w.stats.Open), atomic.LoadInt64(&w.stats.Refused))
	return w, nil
}

// dialAddrWith is dialAddr with extra dial options.
func (a *app) dialAddrWith(addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	other := *a
	other.addr = addr
	other.opts.DialOptions = append(slices.Clone(a.opts.DialOptions), extra...)
	return other.dial()
}
