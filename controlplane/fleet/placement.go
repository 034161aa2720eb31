package fleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// DefaultPlacementTTL bounds how long a replica trusts a placement it
// read: the longest a placement changed on another replica takes to hold
// here. A change made on this replica holds here at once.
const DefaultPlacementTTL = time.Second

// maxCachedPlacements bounds the cache; past it the cache starts over.
// Unplaced agents are cached too (so a flood of made-up names costs one
// read per name per TTL), which is why the bound matters.
const maxCachedPlacements = 10000

// Placements are the operators' grants of which host runs which agent. A
// sidecar token acts for exactly the agents placed on its host: it may
// declare them in its Hello and report their spend. They live in the
// store, so every replica answers the same; lookups are cached for a
// short TTL because the spend path asks on every report.
type Placements struct {
	store store.Store
	clock Clock
	ttl   time.Duration

	mu    sync.Mutex
	cache map[string]cachedPlacement // by agent
	// gen counts changes made here. A read caches its result only if no
	// change happened while it read the store, so a read that raced a
	// move cannot put the old host back.
	gen uint64
}

type cachedPlacement struct {
	host    string // "" when the agent is placed nowhere
	fetched time.Time
}

// NewPlacements returns the placements kept in st. ttl is how long a
// lookup is reused: 0 means DefaultPlacementTTL, negative turns the cache
// off.
func NewPlacements(st store.Store, clock Clock, ttl time.Duration) *Placements {
	if clock == nil {
		clock = SystemClock
	}
	if ttl == 0 {
		ttl = DefaultPlacementTTL
	}
	return &Placements{store: st, clock: clock, ttl: ttl, cache: map[string]cachedPlacement{}}
}

// HostOf returns the host agent is placed on, "" when none.
func (p *Placements) HostOf(ctx context.Context, agent string) (string, error) {
	now := p.clock.Now()
	if host, ok := p.cached(agent, now); ok {
		return host, nil
	}
	hosts, err := p.read(ctx, []string{agent}, now)
	if err != nil {
		return "", err
	}
	return hosts[agent], nil
}

// HostsAgent reports whether agent is placed on host. It has the
// signature of server.HostsAgent: the access policy lets a sidecar act for
// exactly the agents placed on its host, on whichever replica it calls.
func (p *Placements) HostsAgent(ctx context.Context, host, agent string) (bool, error) {
	if host == "" || agent == "" {
		return false, nil
	}
	placed, err := p.HostOf(ctx, agent)
	return err == nil && placed == host, err
}

func (p *Placements) cached(agent string, now time.Time) (string, bool) {
	if p.ttl <= 0 {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cache[agent]
	if !ok || now.Sub(c.fetched) >= p.ttl || now.Before(c.fetched) {
		return "", false
	}
	return c.host, true
}

// read looks agents up in one query and caches every answer, "placed
// nowhere" included. The result maps each placed agent to its host.
func (p *Placements) read(ctx context.Context, agents []string, now time.Time) (map[string]string, error) {
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	res, err := p.store.PlacementList(ctx, &store.PlacementListParams{Agents: agents})
	if err != nil {
		return nil, err
	}
	hosts := make(map[string]string, len(res.Placements))
	for _, pl := range res.Placements {
		hosts[pl.Agent] = pl.Host
	}
	if p.ttl > 0 {
		p.mu.Lock()
		if p.gen == gen {
			if len(p.cache)+len(agents) > maxCachedPlacements {
				clear(p.cache)
			}
			for _, a := range agents {
				p.cache[a] = cachedPlacement{host: hosts[a], fetched: now}
			}
		}
		p.mu.Unlock()
	}
	return hosts, nil
}

// forget drops agent's cached placement after a change made here.
func (p *Placements) forget(agent string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	delete(p.cache, agent)
}

// Place places agent on host, moving it from any host it was on, and
// returns the placement replaced (nil when none) and the new one.
func (p *Placements) Place(ctx context.Context, agent, host, by string) (before, after *store.Placement, err error) {
	before, after, err = p.store.PlacementSet(ctx, &store.PlacementSetParams{Agent: agent, Host: host, PlacedBy: by, Now: p.clock.Now()})
	// Forgotten even when the store failed: the change may have committed.
	p.forget(agent)
	return before, after, err
}

// Unplace removes agent's placement and returns it; store.ErrNotFound
// when it had none.
func (p *Placements) Unplace(ctx context.Context, agent string) (*store.Placement, error) {
	removed, err := p.store.PlacementDelete(ctx, &store.PlacementDeleteParams{Agent: agent})
	p.forget(agent)
	return removed, err
}

// DefaultPlacementPage and MaxPlacementPage bound a page of List.
const (
	DefaultPlacementPage = 100
	MaxPlacementPage     = 1000
)

// List returns a page of placements sorted by agent, of one host when
// host is set.
func (p *Placements) List(ctx context.Context, host string, pageSize int, pageToken string) (*store.PlacementListResult, error) {
	switch {
	case pageSize <= 0:
		pageSize = DefaultPlacementPage
	case pageSize > MaxPlacementPage:
		pageSize = MaxPlacementPage
	}
	return p.store.PlacementList(ctx, &store.PlacementListParams{Host: host, Limit: pageSize, Cursor: pageToken})
}

// Refused is an agent a Hello declared that was not registered, and why.
type Refused struct {
	Name   string
	Reason string
}

// Admit splits a Hello's agents into those the host may declare and those
// it may not, the Hello it returns holding only the former. An agent
// placed on the host is admitted; one placed on another host never is.
// An agent placed nowhere is admitted only when adoptUnplaced is set (an
// operator's connection: `make run` starts its sidecar with the operator
// token, and needs no placement step) and no other ONLINE host in reg
// declares it. The Hello is refused whole, with a *store.QuotaError, when
// it declares more agents than reg's per-host limit.
func (p *Placements) Admit(ctx context.Context, reg *Registry, h Hello, adoptUnplaced bool) (Hello, []Refused, error) {
	if limit := reg.Config().MaxAgentsPerHost; len(h.Agents) > limit {
		return Hello{}, nil, &store.QuotaError{Subject: "fleet:agents-per-host",
			Description: fmt.Sprintf("host %s declares %d agents; at most %d per host (--max-agents-per-host)", h.Host, len(h.Agents), limit)}
	}
	if len(h.Agents) == 0 {
		return h, nil, nil
	}
	names := make([]string, len(h.Agents))
	for i, a := range h.Agents {
		names[i] = a.Name
	}
	// One query for the whole Hello, which also refreshes the cache the
	// spend path reads.
	placed, err := p.read(ctx, names, p.clock.Now())
	if err != nil {
		return Hello{}, nil, fmt.Errorf("reading the placements of host %s's agents: %w", h.Host, err)
	}
	admitted := h
	admitted.Agents = make([]AgentInfo, 0, len(h.Agents))
	var refused []Refused
	for _, a := range h.Agents {
		host, isPlaced := placed[a.Name]
		var why string
		switch {
		case isPlaced && host == h.Host:
		case isPlaced:
			why = fmt.Sprintf("agent %s is placed on host %s, not %s (an operator moves it: factory agents place %s --host %s)",
				a.Name, host, h.Host, a.Name, h.Host)
		case !adoptUnplaced:
			why = fmt.Sprintf("agent %s is not placed on host %s (an operator places it: factory agents place %s --host %s)",
				a.Name, h.Host, a.Name, h.Host)
		default:
			if other := reg.heldByOtherOnline(a.Name, h.Host); other != "" {
				why = fmt.Sprintf("agent %s is declared by host %s, which is ONLINE", a.Name, other)
			}
		}
		if why != "" {
			refused = append(refused, Refused{Name: a.Name, Reason: why})
			continue
		}
		admitted.Agents = append(admitted.Agents, a)
	}
	return admitted, refused, nil
}
