package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The topics a page can listen to on /events, and the API streams that
// feed them. Each is a hint to redraw, not the data: the page fetches its
// own content again, through the same reads a reload would make.
var topicKinds = map[string][]string{
	// WatchEvents kinds (ops.proto) behind each topic.
	"approvals": {"approval"},
	"alerts":    {"alert", "spend_alert"},
	"spend":     {"spend_alert", "emergency_stop"},
	"ops":       {"emergency_stop", "maintenance"},
}

// keepAlive is how often an idle event stream sends a comment, so proxies
// and phones keep the connection and a dead one is noticed.
const keepAlive = 20 * time.Second

// fleetRedraw spaces out redraws of fleet pages, which every heartbeat of
// every host would otherwise trigger.
const fleetRedraw = 2 * time.Second

// events streams "changed" events to a page: one per topic that changed,
// coalesced while the page is slow to read them. The streams behind it
// run with the session's token, so a revoked session's page stops too.
func (s *Server) events(rq *request) {
	var topics []string
	for t := range strings.SplitSeq(rq.r.URL.Query().Get("topics"), ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(topics, t) {
			if _, ok := topicKinds[t]; !ok && t != "tasks" && t != "fleet" {
				http.Error(rq.w, fmt.Sprintf("topics: unknown topic %q (tasks, fleet, approvals, alerts, spend, ops)", t), http.StatusBadRequest)
				return
			}
			topics = append(topics, t)
		}
	}
	if len(topics) == 0 {
		http.Error(rq.w, "topics: name at least one topic (tasks, fleet, approvals, alerts, spend, ops)", http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(rq.w)
	h := rq.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")

	ctx, cancel := context.WithCancel(rq.ctx)
	defer cancel()
	f := &feed{wake: make(chan struct{}, 1), pending: map[string]bool{}}
	var ready sync.WaitGroup
	var kinds []string
	var kindTopics = map[string][]string{}
	for _, t := range topics {
		switch t {
		case "tasks":
			ready.Add(1)
			go f.run(func() error { return s.watchTasks(ctx, f, &ready) })
		case "fleet":
			go f.run(func() error { return s.watchFleet(ctx, f) })
		default:
			for _, k := range topicKinds[t] {
				if !slices.Contains(kinds, k) {
					kinds = append(kinds, k)
				}
				kindTopics[k] = append(kindTopics[k], t)
			}
		}
	}
	if len(kinds) > 0 {
		go f.run(func() error { return s.watchEvents(ctx, f, kinds, kindTopics) })
	}
	// "ready" tells the page (and the browser tests) that changes from
	// now on reach it.
	waitOrDone(ctx, &ready)
	rq.w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(rq.w, "retry: 2000\nevent: ready\ndata: ok\n\n")
	_ = rc.Flush()

	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(rq.w, ": keep-alive\n\n"); err != nil {
				return
			}
		case <-f.wake:
			changed, ended := f.take()
			for _, t := range changed {
				if _, err := fmt.Fprintf(rq.w, "event: changed\ndata: %s\n\n", t); err != nil {
					return
				}
			}
			if ended != nil {
				// The session is gone (revoked, expired): tell the page to
				// go to the sign-in page rather than reconnect forever.
				c := status.Code(ended)
				if c == codes.Unauthenticated || c == codes.PermissionDenied {
					_, _ = fmt.Fprint(rq.w, "event: signout\ndata: session ended\n\n")
				}
				_ = rc.Flush()
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func waitOrDone(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
}

// feed gathers the topics that changed until the writer takes them.
type feed struct {
	wake    chan struct{}
	mu      sync.Mutex
	pending map[string]bool
	order   []string
	ended   error
}

func (f *feed) changed(topic string) {
	f.mu.Lock()
	if !f.pending[topic] {
		f.pending[topic] = true
		f.order = append(f.order, topic)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run runs one watch until it ends; its end ends the page's stream (the
// page reconnects, and a fresh watch starts from the current state).
func (f *feed) run(watch func() error) {
	err := watch()
	if err == nil {
		err = status.Error(codes.Unavailable, "watch ended")
	}
	f.mu.Lock()
	if f.ended == nil {
		f.ended = err
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *feed) take() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.order
	f.order = nil
	clear(f.pending)
	return out, f.ended
}

func (s *Server) watchTasks(ctx context.Context, f *feed, ready *sync.WaitGroup) error {
	var once sync.Once
	defer once.Do(ready.Done)
	st, err := s.queue.WatchTasks(ctx, &factoryv1.WatchTasksRequest{ChangesOnly: true})
	if err != nil {
		return err
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		if ev.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED {
			once.Do(ready.Done)
			continue
		}
		f.changed("tasks")
	}
}

func (s *Server) watchFleet(ctx context.Context, f *feed) error {
	st, err := s.fleet.WatchFleet(ctx, &factoryv1.WatchFleetRequest{})
	if err != nil {
		return err
	}
	// The fleet's view comes again with every reading a sidecar sends;
	// a page needs redrawing at most every fleetRedraw.
	var last time.Time
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
		if now := time.Now(); now.Sub(last) >= fleetRedraw {
			last = now
			f.changed("fleet")
		}
	}
}

func (s *Server) watchEvents(ctx context.Context, f *feed, kinds []string, topics map[string][]string) error {
	st, err := s.ops.WatchEvents(ctx, &factoryv1.WatchEventsRequest{Kinds: kinds})
	if err != nil {
		return err
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		for _, t := range topics[ev.GetEvent().GetKind()] {
			f.changed(t)
		}
	}
}
