package alert

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// BenchmarkEvaluate is one evaluation of every default rule on SQLite with
// a fleet of 50 hosts (one GPU, one disk each) and 200 agents, 20 of them
// OFFLINE (firing), steady state: nothing new to notify.
func BenchmarkEvaluate(b *testing.B) {
	ctx := context.Background()
	st := openSQLite(b)
	clock := &fakeClock{now: t0}
	fl := &fakeFleet{}
	for h := range 50 {
		fl.hosts = append(fl.hosts, HostReading{Host: fmt.Sprintf("gpu-%d", h),
			GPUs:  []GPUReading{{Index: 0, UsedBytes: 10 * gib, TotalBytes: 24 * gib}},
			Disks: []DiskReading{{Path: "/", UsedBytes: 50, TotalBytes: 100}}})
	}
	for a := range 200 {
		fl.agents = append(fl.agents, AgentReading{Name: fmt.Sprintf("agent-%d", a), Host: "gpu-0",
			Offline: a < 20, LastSeen: t0.Add(-10 * time.Minute)})
	}
	q := &fakeQueue{stats: store.QueueStats{Counts: map[store.TaskState]int64{store.StateReady: 10}}}
	svc, err := New(Config{Store: st, Clock: clock, Logger: quiet(), GroupWait: -1,
		Sources: Sources{Queue: q, Fleet: fl, Spend: &fakeSpend{}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Evaluate(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		clock.Advance(time.Second)
		if _, err := svc.Evaluate(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
