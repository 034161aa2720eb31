package approval

import (
	"sync"

	"github.com/factory/factory/controlplane/store"
)

// hub pushes a request's final state to the waiters on it in this
// process. Each waiter has a one-slot buffer: a request becomes final once,
// so a send never blocks.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan *store.Approval]struct{}
}

func newHub() *hub { return &hub{subs: make(map[string]map[chan *store.Approval]struct{})} }

func (h *hub) subscribe(id string) chan *store.Approval {
	ch := make(chan *store.Approval, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[id]
	if m == nil {
		m = make(map[chan *store.Approval]struct{})
		h.subs[id] = m
	}
	m[ch] = struct{}{}
	return ch
}

func (h *hub) unsubscribe(id string, ch chan *store.Approval) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[id]; m != nil {
		delete(m, ch)
		if len(m) == 0 {
			delete(h.subs, id)
		}
	}
}

// publish hands a to every waiter on its id and forgets them: each hears
// once.
func (h *hub) publish(a *store.Approval) {
	h.mu.Lock()
	m := h.subs[a.ID]
	delete(h.subs, a.ID)
	h.mu.Unlock()
	for ch := range m {
		select {
		case ch <- a.Clone():
		default:
		}
	}
}

// waiters counts the waiters on id, for tests.
func (h *hub) waiters(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[id])
}
