package fleet

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The next liveness change is the earliest STALE or OFFLINE threshold of
// any node or agent; a heartbeat moves it on; nothing is due once all are
// OFFLINE.
func TestNextLivenessChangeIsTheEarliestThreshold(t *testing.T) {
	r, clk := newRegistry()
	if _, ok := r.NextLivenessChange(); ok {
		t.Fatal("an empty registry has a change due")
	}
	t0 := clk.Now()
	if err := r.Register(Hello{Host: "a"}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	if err := r.Register(Hello{Host: "b"}); err != nil {
		t.Fatal(err)
	}
	// a is STALE strictly past 25s (2 missed heartbeats and a half).
	want := t0.Add(25*time.Second + time.Nanosecond)
	if got, ok := r.NextLivenessChange(); !ok || !got.Equal(want) {
		t.Fatalf("next change %v, want %v (a's STALE)", got, want)
	}
	clk.Advance(16 * time.Second) // a: 26s, STALE; b: 16s
	if nodeState(t, r, "a") != StateStale {
		t.Fatal("a not STALE at its threshold")
	}
	// Next: b's STALE at t0+10s+25s.
	if got, _ := r.NextLivenessChange(); !got.Equal(t0.Add(35*time.Second + time.Nanosecond)) {
		t.Fatalf("next change %v, want b's STALE", got.Sub(t0))
	}
	if err := r.Heartbeat("b"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5*time.Minute - time.Second)
	// a OFFLINE; b heartbeated at t0+26s: OFFLINE at t0+5m26s.
	if got, _ := r.NextLivenessChange(); !got.Equal(t0.Add(5*time.Minute + 26*time.Second)) {
		t.Fatalf("next change %v, want b's OFFLINE", got.Sub(t0))
	}
	clk.Advance(time.Minute)
	if got, ok := r.NextLivenessChange(); ok {
		t.Fatalf("all OFFLINE, yet a change is due at %v", got)
	}
}

// wakeClock is a fake clock that is also a Waker.
type wakeClock struct {
	*fakeClock
	wakes []chan struct{}
	at    []time.Time
}

func (c *wakeClock) WakeAt(t time.Time) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	c.wakes, c.at = append(c.wakes, ch), append(c.at, t)
	return ch, func() {}
}

// LivenessTimer asks the clock to wake at the next threshold.
func TestLivenessTimerUsesTheClocksWaker(t *testing.T) {
	clk := &wakeClock{fakeClock: &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}}
	r := New(clk, Config{HeartbeatInterval: time.Second})
	if ch, _ := r.LivenessTimer(); ch != nil {
		t.Fatal("a timer with nothing due")
	}
	if err := r.Register(Hello{Host: "a"}); err != nil {
		t.Fatal(err)
	}
	r.LivenessTimer()
	if len(clk.at) != 1 || !clk.at[0].Equal(clk.Now().Add(2500*time.Millisecond+time.Nanosecond)) {
		t.Fatalf("woken at %v, want 2.5s on", clk.at)
	}
}

// Forgetting a host removes it and the agents it declared, not agents of
// other hosts; an ONLINE host needs force.
func TestForgetHostRemovesItAndItsAgents(t *testing.T) {
	r, clk := newRegistry()
	if err := r.Register(Hello{Host: "a", Agents: []AgentInfo{{Name: "forge"}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(Hello{Host: "b", Agents: []AgentInfo{{Name: "scout"}}}); err != nil {
		t.Fatal(err)
	}
	r.ReportedGPUs("a", 2)
	if _, err := ForgetHost(t.Context(), r, nil, "a", false); err == nil {
		t.Fatal("forgot an ONLINE host without force")
	}
	clk.Advance(time.Minute)
	res, err := ForgetHost(t.Context(), r, nil, "a", false)
	if err != nil || !res.Known || res.Node.State != StateStale || res.Node.GPUsReported != 2 {
		t.Fatalf("forget: %+v, %v", res, err)
	}
	if len(r.Nodes()) != 1 || len(r.Agents()) != 1 || r.Agents()[0].Name != "scout" {
		t.Errorf("left: %+v %+v", r.Nodes(), r.Agents())
	}
	if _, err := ForgetHost(t.Context(), r, nil, "a", true); err == nil {
		t.Error("forgot an unknown host")
	}
}

// DiskUsedRatio is df's Use%: on the test's own filesystem, statfs's
// numbers give what df prints (df rounds up).
func TestDiskUsedRatioIsDfs(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	bs := uint64(st.Bsize)
	used, avail := (st.Blocks-st.Bfree)*bs, st.Bavail*bs
	got := DiskUsedRatio(used, avail) * 100
	if DiskUsedRatio(80, 15) < 0.84 || DiskUsedRatio(0, 0) != 0 {
		t.Errorf("80 used, 15 available: %v; want 84.2%% (reserved blocks count as full)", DiskUsedRatio(80, 15))
	}
	out, err := exec.Command("df", "--output=pcent", dir).Output()
	if err != nil {
		t.Skipf("df not usable here: %v", err)
	}
	f := strings.Fields(string(out))
	df, err := strconv.Atoi(strings.TrimSuffix(f[len(f)-1], "%"))
	if err != nil {
		t.Skipf("df output %q", out)
	}
	if ceil := int(got); float64(ceil) < got && ceil+1 != df || float64(ceil) == got && ceil != df {
		t.Errorf("DiskUsedRatio says %.3f%%, df says %d%%", got, df)
	}
}
