package queue

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// nopStore satisfies Config validation; these tests never reach it.
type nopStore struct{ store.Store }

func TestBackoffGrowsExponentiallyWithJitterAndCap(t *testing.T) {
	r := 0.0
	s, err := New(Config{Store: nopStore{}, RetryBase: time.Second, RetryMax: time.Minute, Jitter: 0.2, Rand: func() float64 { return r }})
	if err != nil {
		t.Fatal(err)
	}
	r = 0.5 // the middle of the jitter band: no spread
	for attempt, want := range map[int32]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 30: time.Minute} {
		if got := s.Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", attempt, got, want)
		}
	}
	r = 0 // bottom of the band
	if got := s.Backoff(3); got != time.Duration(float64(4*time.Second)*0.8) {
		t.Errorf("low jitter: %s", got)
	}
	r = 0.999999 // top of the band
	if got := s.Backoff(3); got < 4700*time.Millisecond || got > 4800*time.Millisecond {
		t.Errorf("high jitter: %s", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no store":         {},
		"lease too long":   {Store: nopStore{}, DefaultLease: 2 * time.Hour},
		"max below base":   {Store: nopStore{}, RetryBase: time.Minute, RetryMax: time.Second},
		"jitter too large": {Store: nopStore{}, Jitter: 1.5},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestBroadcastWakesEveryWaiter(t *testing.T) {
	b := newBroadcast()
	w1, w2 := b.wait(), b.wait()
	b.notify()
	for _, w := range []<-chan struct{}{w1, w2} {
		select {
		case <-w:
		default:
			t.Fatal("waiter not woken")
		}
	}
	select {
	case <-b.wait():
		t.Fatal("a new waiter saw an old wake-up")
	default:
	}
}
