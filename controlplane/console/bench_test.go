package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	"github.com/factory/factory/controlplane/telemetry"
)

// The console's target: Overview and Tasks served in under 50 ms with
// 100,000 tasks and 10 million spend events in the store, each under
// 200 KB. The store is filled before the control plane starts, straight
// through the driver (the API would take hours to take 10 M events on
// this machine), then every page is fetched over HTTP with a session,
// as a browser would: console → in-process gRPC → domain → SQLite.
//
//	go test -run '^$' -bench BenchmarkConsolePages -benchtime 200x ./controlplane/console/
//
// FACTORY_BENCH_TASKS and FACTORY_BENCH_SPEND_EVENTS change the sizes.
// A session token made at sign-in stays in a kept store: harmless.
func BenchmarkConsolePages(b *testing.B) {
	tasks := envInt("FACTORY_BENCH_TASKS", 100_000)
	events := envInt("FACTORY_BENCH_SPEND_EVENTS", 10_000_000)
	// FACTORY_BENCH_DATA_DIR keeps the seeded store between runs (it is
	// seeded when it holds none): seeding 10 M events takes minutes.
	dataDir := os.Getenv("FACTORY_BENCH_DATA_DIR")
	if dataDir == "" {
		dataDir = b.TempDir()
	}
	if _, err := os.Stat(filepath.Join(dataDir, "factory.db")); err != nil {
		seedStore(b, filepath.Join(dataDir, "factory.db"), tasks, events)
	}

	f := startFactory(b, func(c *server.Config) { c.DataDir = dataDir })
	c := client(b)
	resp, err := c.Get(f.URL + f.SignInPath)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	for _, page := range []string{"/", "/tasks", "/tasks?state=READY", "/tasks?state=FAILED&min_attempt=2", "/approvals", "/spend", "/fleet", "/alerts"} {
		b.Run(page, func(b *testing.B) {
			var bytes int
			get := func() {
				resp, err := c.Get(f.URL + page)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("GET %s: %d", page, resp.StatusCode)
				}
				bytes = int(n)
			}
			get() // warm: the first read of a cold page cache is not the steady state
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				get()
			}
			cpu := processCPU() - cpu0
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
			// Client and server share this process: the CPU is both, an
			// upper bound on the server's.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/page")
			b.ReportMetric(float64(bytes), "bytes")
		})
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func processCPU() time.Duration {
	user, sys, _, _ := telemetry.ProcessUsage()
	return user + sys
}

// seedStore writes tasks (spread over the states, roles and kinds a
// factory has) and spend events (20 agents, 8 models, 30 days ending
// today) through the SQLite driver.
func seedStore(b *testing.B, path string, tasks, events int) {
	b.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	now := time.Now().UTC()
	roles := []string{"builder", "researcher", "tester", "deployer", ""}
	kinds := []string{"code", "research", "test", "deploy", "review"}
	states := []store.TaskState{store.StateReady, store.StateReady, store.StateBacklog, store.StateDone, store.StateDone, store.StateDone, store.StateFailed, store.StatePaused}
	const batch = 2_000
	for i := 0; i < tasks; i += batch {
		var ts []*store.TaskCreate
		for j := i; j < min(tasks, i+batch); j++ {
			id, _ := uuid.NewV7()
			ts = append(ts, &store.TaskCreate{ID: id.String(), Title: fmt.Sprintf("Task %d: build the thing", j), Kind: kinds[j%len(kinds)],
				PayloadJSON: `{"repo":"factory","n":` + strconv.Itoa(j) + `}`, Role: roles[j%len(roles)], Priority: int32(j % 5), MaxAttempts: 3,
				Labels: map[string]string{"project": fmt.Sprintf("p%d", j%7)}, InitialState: states[j%len(states)]})
		}
		if _, err := st.TaskCreate(ctx, &store.TaskCreateParams{Tasks: ts, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
	models := []string{"claude-opus-4", "claude-sonnet-4", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gemini-2.5-pro", "qwen2.5:7b"}
	providers := []string{"anthropic", "anthropic", "anthropic", "openai", "openai", "openai", "google", "ollama"}
	tiers := []string{store.TierFrontier, store.TierMid, store.TierMid, store.TierMid, store.TierMid, store.TierMid, store.TierFrontier, store.TierLocal}
	const evBatch = 5_000
	for i := 0; i < events; i += evBatch {
		evs := make([]*store.SpendEvent, 0, evBatch)
		for n := i; n < min(events, i+evBatch); n++ {
			m := n % len(models)
			at := now.Add(-time.Duration(n%(30*24)) * time.Hour)
			evs = append(evs, &store.SpendEvent{ID: fmt.Sprintf("ev-%010d", n), Agent: fmt.Sprintf("agent-%02d", n%20), Host: "ws-1",
				Model: models[m], Provider: providers[m], Tier: tiers[m], InputTokens: 2_000, OutputTokens: 400,
				CostMicros: int64(100 + n%500), TaskID: fmt.Sprintf("task-%d", n/50), OccurredAt: at, Day: at.Format("2006-01-02"), RecordedAt: at})
		}
		if _, err := st.SpendRecord(ctx, &store.SpendRecordParams{Events: evs, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d tasks and %d spend events in %s", tasks, events, time.Since(start).Round(time.Second))
}
