package alert

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
)

// Sources are where the measurements come from. A nil source leaves its
// rules unevaluated (their alerts keep their state), as does a source that
// fails: a broken reading must not resolve an alert.
type Sources struct {
	Queue QueueSource
	Fleet FleetSource
	Spend SpendSource
	LLM   LLMSource
	// Backup reads the scheduled backups (backup.go).
	Backup BackupSource
}

// LLMSource counts recent LLM calls and their failures.
type LLMSource interface {
	// LLMRequests returns the calls of the last window (15 minutes) per
	// provider and model.
	LLMRequests(ctx context.Context) ([]LLMRequests, error)
}

// LLMRequests is one provider and model's recent calls.
type LLMRequests struct {
	Provider, Model    string
	Requests, Failures int64
}

// LLMErrorRateMinRequests is the fewest calls in the window that give an
// error rate: one failure in a handful of calls is noise, not an outage.
const LLMErrorRateMinRequests = 20

// QueueSource reads the queue; store.Store is one.
type QueueSource interface {
	QueueStats(ctx context.Context) (*store.QueueStats, error)
	TaskList(ctx context.Context, params *store.TaskListParams) (*store.TaskListResult, error)
}

// FleetSource reads the fleet's latest state.
type FleetSource interface {
	// Hosts returns each host's latest GPU and disk readings.
	Hosts(ctx context.Context) ([]HostReading, error)
	// Agents returns every agent's liveness.
	Agents(ctx context.Context) ([]AgentReading, error)
	// SwapRates returns each host's model swaps in the last hour.
	SwapRates(ctx context.Context) (map[string]int, error)
}

// HostReading is one host's latest readings.
type HostReading struct {
	Host  string
	GPUs  []GPUReading
	Disks []DiskReading
	// Online is whether the host is ONLINE: the readings of one that is
	// not are unknown, and its probes measure nothing.
	Online bool
	// Probes are the service probes' outcomes.
	Probes []ProbeReading
	// NVMLError is why NVML fails on the host, or empty.
	NVMLError string
	// GPUsReported is the most GPUs the host ever reported.
	GPUsReported int
}

// ProbeReading is one service probe's outcome.
type ProbeReading struct {
	Service string
	OK      bool
	Detail  string
}

// GPUReading is one GPU's memory.
type GPUReading struct {
	Index                 int
	UsedBytes, TotalBytes uint64
	// Error is why the GPU's readings failed, or empty.
	Error string
}

// DiskReading is one filesystem's usage: its ratio is df's, used /
// (used + available) (fleet.DiskUsedRatio).
type DiskReading struct {
	Path                  string
	UsedBytes, TotalBytes uint64
	AvailableBytes        uint64
}

// AgentReading is one agent's liveness.
type AgentReading struct {
	Name     string
	Host     string
	Offline  bool
	LastSeen time.Time
}

// SpendSource reads today's spend (the day in the budget's time zone).
type SpendSource interface {
	SpendToday(ctx context.Context) (*Spend, error)
}

// Spend is today's spend in micro-dollars.
type Spend struct {
	TotalMicros int64
	TierMicros  map[string]int64
	AgentMicros map[string]int64
}

// SpendFunc adapts a function to SpendSource.
type SpendFunc func(ctx context.Context) (*Spend, error)

// SpendToday calls f.
func (f SpendFunc) SpendToday(ctx context.Context) (*Spend, error) { return f(ctx) }

// FleetRegistry reads a fleet registry and its events store. hostReading
// turns a node's opaque telemetry into readings (the server knows its
// type); events may be nil, which leaves swap rates unmeasured.
func FleetRegistry(reg *fleet.Registry, events *fleet.Events, hostReading func(host string, telemetry any) HostReading) FleetSource {
	return &registrySource{reg: reg, events: events, hostReading: hostReading}
}

type registrySource struct {
	reg         *fleet.Registry
	events      *fleet.Events
	hostReading func(host string, telemetry any) HostReading
}

func (s *registrySource) Hosts(context.Context) ([]HostReading, error) {
	var out []HostReading
	for _, n := range s.reg.Nodes() {
		if n.Telemetry == nil || s.hostReading == nil {
			continue
		}
		r := s.hostReading(n.Host, n.Telemetry)
		r.Host, r.Online, r.GPUsReported = n.Host, n.State == fleet.StateOnline, n.GPUsReported
		out = append(out, r)
	}
	return out, nil
}

func (s *registrySource) Agents(context.Context) ([]AgentReading, error) {
	agents := s.reg.Agents()
	out := make([]AgentReading, 0, len(agents))
	for _, a := range agents {
		out = append(out, AgentReading{Name: a.Name, Host: a.Host, Offline: a.State == fleet.StateOffline, LastSeen: a.LastSeen})
	}
	return out, nil
}

func (s *registrySource) SwapRates(ctx context.Context) (map[string]int, error) {
	if s.events == nil {
		return nil, errNoSource
	}
	return s.events.SwapRates(ctx)
}

var errNoSource = errors.New("no source for this measurement")

// fleetHosts reads the hosts once per evaluation for every host rule.
func (m *measurer) fleetHosts(ctx context.Context) ([]HostReading, error) {
	if m.src.Fleet == nil {
		return nil, errNoSource
	}
	return m.hosts.get(func() ([]HostReading, error) { return m.src.Fleet.Hosts(ctx) })
}

// series is one instance of a measurement.
type series struct {
	labels map[string]string
	value  float64
	// examples name a few of what the value counts (task ids), for the
	// alert's text: an operator reads which, not only how many.
	examples []string
}

// measurer computes the measurements of one evaluation, each at most once,
// reading each source at most once: several expressions share a read
// (the spend rollups, the queue's stats, the hosts' readings).
type measurer struct {
	src  Sources
	now  time.Time
	memo map[Expr][]series
	errs map[Expr]error

	spend lazy[*Spend]
	stats lazy[*store.QueueStats]
	hosts lazy[[]HostReading]
}

// lazy is a source read made on first use and kept for the evaluation.
type lazy[T any] struct {
	done bool
	v    T
	err  error
}

func (l *lazy[T]) get(read func() (T, error)) (T, error) {
	if !l.done {
		l.v, l.err = read()
		l.done = true
	}
	return l.v, l.err
}

func (m *measurer) get(ctx context.Context, e Expr) ([]series, error) {
	if s, ok := m.memo[e]; ok {
		return s, m.errs[e]
	}
	s, err := m.measure(ctx, e)
	m.memo[e], m.errs[e] = s, err
	return s, err
}

func one(v float64) []series { return []series{{labels: map[string]string{}, value: v}} }

func seconds(d time.Duration) float64 { return float64(d / time.Second) }

func (m *measurer) measure(ctx context.Context, e Expr) ([]series, error) {
	switch e {
	case ExprSpendDaily, ExprSpendTierDaily, ExprSpendAgentDaily:
		if m.src.Spend == nil {
			return nil, errNoSource
		}
		sp, err := m.spend.get(func() (*Spend, error) { return m.src.Spend.SpendToday(ctx) })
		if err != nil {
			return nil, err
		}
		switch e {
		case ExprSpendDaily:
			return one(float64(sp.TotalMicros)), nil
		case ExprSpendTierDaily:
			return keyed("tier", sp.TierMicros), nil
		default:
			return keyed("agent", sp.AgentMicros), nil
		}
	case ExprGPUMemoryUsed, ExprDiskUsed:
		hosts, err := m.fleetHosts(ctx)
		if err != nil {
			return nil, err
		}
		var out []series
		for _, h := range hosts {
			if e == ExprGPUMemoryUsed {
				for _, g := range h.GPUs {
					if g.TotalBytes > 0 {
						out = append(out, series{labels: map[string]string{"host": h.Host, "gpu": strconv.Itoa(g.Index)},
							value: float64(g.UsedBytes) / float64(g.TotalBytes)})
					}
				}
				continue
			}
			for _, d := range h.Disks {
				if d.UsedBytes+d.AvailableBytes > 0 {
					out = append(out, series{labels: map[string]string{"host": h.Host, "path": d.Path},
						value: fleet.DiskUsedRatio(d.UsedBytes, d.AvailableBytes)})
				}
			}
		}
		return out, nil
	case ExprServiceDown, ExprGPUUnavailable:
		hosts, err := m.fleetHosts(ctx)
		if err != nil {
			return nil, err
		}
		var out []series
		for _, h := range hosts {
			if !h.Online {
				continue
			}
			if e == ExprServiceDown {
				for _, p := range h.Probes {
					if !p.OK {
						out = append(out, series{labels: map[string]string{"host": h.Host, "service": p.Service}, value: 1})
					}
				}
				continue
			}
			if s, ok := gpuUnavailable(h); ok {
				out = append(out, s)
			}
		}
		return out, nil
	case ExprAgentOffline:
		if m.src.Fleet == nil {
			return nil, errNoSource
		}
		agents, err := m.src.Fleet.Agents(ctx)
		if err != nil {
			return nil, err
		}
		var out []series
		for _, a := range agents {
			if a.Offline && !a.LastSeen.IsZero() {
				out = append(out, series{labels: map[string]string{"agent": a.Name, "host": a.Host}, value: seconds(m.now.Sub(a.LastSeen))})
			}
		}
		return out, nil
	case ExprModelSwaps:
		if m.src.Fleet == nil {
			return nil, errNoSource
		}
		rates, err := m.src.Fleet.SwapRates(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]series, 0, len(rates))
		for host, n := range rates {
			out = append(out, series{labels: map[string]string{"host": host}, value: float64(n)})
		}
		return out, nil
	case ExprReadyDepth, ExprDeadLettered, ExprReadyOldestWait, ExprInProgressOldest:
		if m.src.Queue == nil {
			return nil, errNoSource
		}
		st, err := m.stats.get(func() (*store.QueueStats, error) { return m.src.Queue.QueueStats(ctx) })
		if err != nil {
			return nil, err
		}
		switch e {
		case ExprReadyDepth:
			return one(float64(st.Counts[store.StateReady])), nil
		case ExprDeadLettered:
			n := st.Counts[store.StateFailed]
			out := one(float64(n))
			if n > 0 {
				ids, err := m.newestFailed(ctx, deadLetterExamples)
				if err != nil {
					return nil, err
				}
				out[0].examples = ids
			}
			return out, nil
		case ExprReadyOldestWait:
			if st.OldestReadySince.IsZero() {
				return one(0), nil
			}
			return one(seconds(m.now.Sub(st.OldestReadySince))), nil
		default:
			if st.OldestClaimedAt.IsZero() {
				return one(0), nil
			}
			return one(seconds(m.now.Sub(st.OldestClaimedAt))), nil
		}
	case ExprLLMErrorRate:
		if m.src.LLM == nil {
			return nil, errNoSource
		}
		counts, err := m.src.LLM.LLMRequests(ctx)
		if err != nil {
			return nil, err
		}
		var out []series
		for _, c := range counts {
			if c.Requests >= LLMErrorRateMinRequests {
				out = append(out, series{labels: map[string]string{"provider": c.Provider, "model": c.Model},
					value: float64(c.Failures) / float64(c.Requests)})
			}
		}
		return out, nil
	case ExprBackupAge:
		return m.backupAge(ctx)
	case ExprFailed24h:
		if m.src.Queue == nil {
			return nil, errNoSource
		}
		n, err := m.failedSince(ctx, m.now.Add(-24*time.Hour))
		return one(float64(n)), err
	}
	return nil, errNoSource
}

// gpuUnavailable is h's gpu_unavailable series: NVML failing, GPUs gone
// since the host reported them, or GPUs whose readings fail.
func gpuUnavailable(h HostReading) (series, bool) {
	labels := map[string]string{"host": h.Host}
	if h.NVMLError != "" {
		return series{labels: labels, value: 1, examples: []string{"NVML failing: " + h.NVMLError}}, true
	}
	missing := max(h.GPUsReported-len(h.GPUs), 0)
	var failing []string
	for _, g := range h.GPUs {
		if g.Error != "" {
			missing++
			failing = append(failing, fmt.Sprintf("GPU %d: %s", g.Index, g.Error))
		}
	}
	if missing == 0 {
		return series{}, false
	}
	reason := fmt.Sprintf("%d of %d GPU(s) unavailable", missing, max(h.GPUsReported, len(h.GPUs)))
	if len(failing) > 0 {
		reason += " (" + strings.Join(failing, "; ") + ")"
	}
	return series{labels: labels, value: 1, examples: []string{reason}}, true
}

// deadLetterExamples is how many dead-lettered tasks an alert names.
const deadLetterExamples = 3

// newestFailed returns the ids of the n most recently created FAILED tasks.
func (m *measurer) newestFailed(ctx context.Context, n int) ([]string, error) {
	page, err := m.src.Queue.TaskList(ctx, &store.TaskListParams{States: []store.TaskState{store.StateFailed}, NewestFirst: true, Limit: n})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(page.Tasks))
	for _, t := range page.Tasks[:min(n, len(page.Tasks))] {
		ids = append(ids, t.ID)
	}
	return ids, nil
}

// failedSince counts FAILED tasks that went FAILED at or after since. The
// dead letter is small by design (an operator empties it), so paging
// through it is cheap.
func (m *measurer) failedSince(ctx context.Context, since time.Time) (int, error) {
	n, cursor := 0, ""
	for {
		page, err := m.src.Queue.TaskList(ctx, &store.TaskListParams{States: []store.TaskState{store.StateFailed}, Limit: 500, Cursor: cursor})
		if err != nil {
			return 0, err
		}
		for _, t := range page.Tasks {
			if !t.StateChangedAt.Before(since) {
				n++
			}
		}
		if page.NextCursor == "" {
			return n, nil
		}
		cursor = page.NextCursor
	}
}

func keyed(label string, m map[string]int64) []series {
	out := make([]series, 0, len(m))
	for k, v := range m {
		out = append(out, series{labels: map[string]string{label: k}, value: float64(v)})
	}
	return out
}
