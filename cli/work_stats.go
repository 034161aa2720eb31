package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// workStats is what --stats reports: the worker's own cost per task,
// apart from CMD's run.
type workStats struct {
	mu    sync.Mutex
	began time.Time
	// cpu and childCPU are the worker's and its children's CPU time at
	// the start; their ok is false where the platform cannot tell.
	cpu, childCPU     time.Duration
	cpuOK, childCPUOK bool
	// start is claim answered → CMD started; finish CMD exited →
	// outcome acknowledged; between CMD exited → the slot's next CMD
	// started, when the next claim went out with the completion.
	start, finish, between []time.Duration
	outcomes               map[string]int
	tasks                  int
}

func (s *workStats) begin() {
	s.began = time.Now()
	s.cpu, s.cpuOK = selfCPU()
	s.childCPU, s.childCPUOK = childrenCPU()
	s.outcomes = map[string]int{}
}

func (s *workStats) finished(r *taskRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks++
	s.outcomes[r.outcome]++
	if r.startErr == nil {
		s.start = append(s.start, r.startedAt.Sub(r.claimedAt))
		if !r.sinceLastExit.IsZero() {
			s.between = append(s.between, r.startedAt.Sub(r.sinceLastExit))
		}
	}
	if !r.settledAt.IsZero() && r.outcome != "lost" {
		s.finish = append(s.finish, r.settledAt.Sub(r.exitedAt))
	}
}

func (s *workStats) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks
}

// workStatsReport is what --stats prints; -o json prints it as
// {"stats": {...}}, the last line.
type workStatsReport struct {
	Tasks          int            `json:"tasks"`
	Outcomes       map[string]int `json:"outcomes"`
	WallSeconds    float64        `json:"wall_seconds"`
	TasksPerSecond float64        `json:"tasks_per_second"`
	// ClaimToStart is claim answered → CMD started.
	ClaimToStart latencySummary `json:"claim_to_start"`
	// ExitToAck is CMD exited → completion (or failure) acknowledged.
	ExitToAck latencySummary `json:"exit_to_ack"`
	// ExitToNextStart is CMD exited → the slot's next CMD started, where
	// the next claim went out with the completion: everything a task
	// costs besides CMD, on a queue with work waiting.
	ExitToNextStart latencySummary `json:"exit_to_next_start"`
	// WorkerCPUMicrosPerTask is the worker's CPU time per task, in µs;
	// null where the platform cannot tell.
	WorkerCPUMicrosPerTask *float64 `json:"worker_cpu_us_per_task"`
	// CMDCPUMicrosPerTask is CMD's CPU time per task, in µs.
	CMDCPUMicrosPerTask *float64 `json:"cmd_cpu_us_per_task"`
}

func (s *workStats) report() workStatsReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	wall := time.Since(s.began)
	rep := workStatsReport{
		Tasks: s.tasks, Outcomes: maps.Clone(s.outcomes), WallSeconds: math.Round(wall.Seconds()*1000) / 1000,
		ClaimToStart: summarize(s.start), ExitToAck: summarize(s.finish), ExitToNextStart: summarize(s.between),
	}
	if wall > 0 {
		rep.TasksPerSecond = math.Round(float64(s.tasks)/wall.Seconds()*10) / 10
	}
	if now, ok := selfCPU(); ok && s.cpuOK && s.tasks > 0 {
		v := microsPer(now-s.cpu, int64(s.tasks))
		rep.WorkerCPUMicrosPerTask = &v
	}
	if now, ok := childrenCPU(); ok && s.childCPUOK && s.tasks > 0 {
		v := microsPer(now-s.childCPU, int64(s.tasks))
		rep.CMDCPUMicrosPerTask = &v
	}
	return rep
}

// printStats prints the --stats report: a JSON line on stdout with -o
// json, lines on stderr otherwise.
func (w *worker) printStats() {
	rep := w.stats.report()
	if w.a.jsonOutput() {
		b, err := json.Marshal(map[string]workStatsReport{"stats": rep})
		if err == nil {
			w.writeLine(w.a.stdout(), string(b))
		}
		return
	}
	var outcomes []string
	for _, k := range slices.Sorted(maps.Keys(rep.Outcomes)) {
		outcomes = append(outcomes, fmt.Sprintf("%s %d", k, rep.Outcomes[k]))
	}
	w.logf("work: stats: %d task(s) in %.3fs (%.1f/s): %s", rep.Tasks, rep.WallSeconds, rep.TasksPerSecond, orDash(strings.Join(outcomes, ", ")))
	line := func(what string, l latencySummary) {
		w.logf("work: stats: %-38s p50 %.3fms  p99 %.3fms  max %.3fms  (%d)", what, l.P50ms, l.P99ms, l.Maxms, l.Count)
	}
	line("claim answered → CMD started", rep.ClaimToStart)
	line("CMD exited → outcome acknowledged", rep.ExitToAck)
	line("CMD exited → next CMD started", rep.ExitToNextStart)
	cpu := func(v *float64) string {
		if v == nil {
			return "not measured here"
		}
		return fmt.Sprintf("%.1fµs", *v)
	}
	w.logf("work: stats: CPU per task: worker %s, CMD %s", cpu(rep.WorkerCPUMicrosPerTask), cpu(rep.CMDCPUMicrosPerTask))
}
