package alert

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
)

// Clock tells the time; tests drive a fake one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Config configures New.
type Config struct {
	// Store keeps alerts and silences. Required.
	Store store.AlertStore
	// Sources are what the rules measure.
	Sources Sources
	// Publisher hears the notifications (notify.Discard when nil).
	Publisher notify.Publisher
	// Rules override or extend the defaults (see Rules).
	Rules []Rule
	// Interval is how often Run evaluates (15s).
	Interval time.Duration
	// RepeatInterval is how often a firing alert nobody acked is notified
	// again (4h).
	RepeatInterval time.Duration
	// GroupWait holds a new alert's first notification this long (30s;
	// negative: not at all), so alerts of one rule that fire together go
	// out in one event.
	GroupWait time.Duration
	// Retention is how long a resolved alert stays listed and an ended
	// silence stays stored (24h).
	Retention time.Duration
	Logger    *slog.Logger
	Clock     Clock
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = 15 * time.Second
	}
	if c.RepeatInterval <= 0 {
		c.RepeatInterval = 4 * time.Hour
	}
	if c.GroupWait < 0 {
		c.GroupWait = 0
	} else if c.GroupWait == 0 {
		c.GroupWait = 30 * time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.Publisher == nil {
		c.Publisher = notify.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return c
}

// FromFile applies an alert configuration file's settings to c.
func (c Config) FromFile(f File) Config {
	c.Rules = f.Rules
	if f.Interval > 0 {
		c.Interval = f.Interval
	}
	if f.RepeatInterval > 0 {
		c.RepeatInterval = f.RepeatInterval
	}
	if f.GroupWait != nil {
		c.GroupWait = *f.GroupWait
		if c.GroupWait == 0 {
			c.GroupWait = -1 // none, not the default
		}
	}
	return c
}

// Service evaluates the rules and serves acks and silences.
type Service struct {
	cfg   Config
	rules []Rule
	log   *slog.Logger
	clock Clock

	mu          sync.Mutex // one evaluation at a time
	evaluations atomic.Int64
}

// New returns the service; the rules are checked here, so a bad
// configuration stops the control plane at start.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if cfg.Store == nil {
		return nil, errors.New("alert: Config.Store is required")
	}
	rules, err := Rules(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("alert rules: %w", err)
	}
	return &Service{cfg: cfg, rules: rules, log: cfg.Logger, clock: cfg.Clock}, nil
}

// Rules returns the rules in force.
func (s *Service) Rules() []Rule { return slices.Clone(s.rules) }

// Evaluations counts the evaluations this service ran.
func (s *Service) Evaluations() int64 { return s.evaluations.Load() }

// Run evaluates every Interval until ctx ends. With replicas, run it under
// the elector so that one replica evaluates.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.Evaluate(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "alert evaluation failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Result is what one evaluation did.
type Result struct {
	Pending, Firing int
	// Events are the notifications published, one per rule with news.
	Events []notify.Event
}

type key struct{ rule, fingerprint string }

// Evaluate measures every rule once, moves the alerts through their
// states, stores them and publishes what an operator must hear.
func (s *Service) Evaluate(ctx context.Context) (*Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evaluations.Add(1)
	now := s.clock.Now().UTC()
	existing, err := s.cfg.Store.AlertList(ctx, nil)
	if err != nil {
		return nil, err
	}
	silences, err := s.cfg.Store.SilenceList(ctx, &store.SilenceListParams{ActiveAt: now})
	if err != nil {
		return nil, err
	}
	byKey := make(map[key]*store.Alert, len(existing))
	for _, a := range existing {
		byKey[key{a.Rule, a.Fingerprint}] = a
	}
	dirty := map[*store.Alert]bool{}
	var deletes []string
	active := map[key]bool{}
	evaluated := map[string]bool{}
	// resolved are the alerts this evaluation resolved: a resolution is
	// news once, when it happens.
	resolved := map[*store.Alert]bool{}
	known := map[string]*Rule{}
	m := &measurer{src: s.cfg.Sources, now: now, memo: map[Expr][]series{}, errs: map[Expr]error{}}
	for i := range s.rules {
		r := &s.rules[i]
		known[r.Name] = r
		got, err := m.get(ctx, r.Expr)
		if err != nil {
			if !errors.Is(err, errNoSource) && ctx.Err() == nil {
				s.log.WarnContext(ctx, "alert rule not evaluated: its measurement failed", "rule", r.Name, "expr", string(r.Expr), "err", err)
			}
			continue
		}
		evaluated[r.Name] = true
		for _, x := range got {
			if !matches(x.labels, r.Match) || !(x.value > r.Threshold) {
				continue
			}
			labels := maps.Clone(x.labels)
			maps.Copy(labels, r.Match)
			k := key{r.Name, Fingerprint(labels)}
			active[k] = true
			a := byKey[k]
			if a == nil || a.State == store.AlertResolved {
				a = &store.Alert{ID: newID(), Rule: r.Name, Fingerprint: k.fingerprint, Labels: labels,
					State: store.AlertPending, ActiveSince: now}
				byKey[k] = a
			}
			summary, err := r.render(x.value, labels, x.examples)
			if err != nil {
				summary = fmt.Sprintf("%s: %v > %v", r.Name, x.value, r.Threshold)
			}
			a.Value, a.Summary, a.Severity, a.UpdatedAt = x.value, summary, r.Severity, now
			if a.State == store.AlertPending && now.Sub(a.ActiveSince) >= r.For {
				a.State, a.FiredAt = store.AlertFiring, now
			}
			dirty[a] = true
		}
	}
	for k, a := range byKey {
		if active[k] || a.State == store.AlertResolved {
			continue
		}
		// A rule whose measurement failed keeps its alerts as they are; a
		// rule no longer configured resolves them.
		if known[a.Rule] != nil && !evaluated[a.Rule] {
			continue
		}
		if a.State == store.AlertPending {
			deletes = append(deletes, a.ID)
			delete(byKey, k)
			continue
		}
		a.State, a.ResolvedAt, a.UpdatedAt = store.AlertResolved, now, now
		dirty[a] = true
		resolved[a] = true
	}

	res := &Result{}
	groups := map[string][]*store.Alert{}
	for _, a := range byKey {
		switch a.State {
		case store.AlertPending:
			res.Pending++
		case store.AlertFiring:
			res.Firing++
		}
		silenced := silencedBy(silences, a) != nil
		switch {
		case a.State == store.AlertFiring:
			due := a.LastNotifiedAt.IsZero() || (a.AckedBy == "" && now.Sub(a.LastNotifiedAt) >= s.cfg.RepeatInterval)
			if due && !silenced {
				groups[a.Rule] = append(groups[a.Rule], a)
			}
		case resolved[a] && !a.LastNotifiedAt.IsZero() && !silenced:
			// Only an alert whose firing was heard of is heard to resolve.
			groups[a.Rule] = append(groups[a.Rule], a)
		}
	}
	for _, rule := range slices.Sorted(maps.Keys(groups)) {
		group := groups[rule]
		if s.holdGroup(group, now) {
			continue
		}
		for _, a := range group {
			a.LastNotifiedAt = now
			dirty[a] = true
		}
		res.Events = append(res.Events, groupEvent(rule, group, now))
	}

	save := &store.AlertSaveParams{DeleteIDs: deletes, PruneBefore: now.Add(-s.cfg.Retention)}
	for a := range dirty {
		save.Alerts = append(save.Alerts, a)
	}
	slices.SortFunc(save.Alerts, func(a, b *store.Alert) int {
		return cmp.Or(strings.Compare(a.Rule, b.Rule), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	// Stored before published: a failed save publishes nothing, and the
	// next evaluation decides again from what is stored.
	if err := s.cfg.Store.AlertSave(ctx, save); err != nil {
		return nil, err
	}
	for _, e := range res.Events {
		s.cfg.Publisher.Publish(ctx, e)
	}
	return res, nil
}

// holdGroup reports whether a group's notification waits for GroupWait:
// while all it has to say is alerts that started firing less than
// GroupWait ago, so that others of the rule firing with them join it.
func (s *Service) holdGroup(group []*store.Alert, now time.Time) bool {
	for _, a := range group {
		if a.State != store.AlertFiring || !a.LastNotifiedAt.IsZero() || now.Sub(a.FiredAt) >= s.cfg.GroupWait {
			return false
		}
	}
	return true
}

func groupEvent(rule string, group []*store.Alert, now time.Time) notify.Event {
	slices.SortFunc(group, func(a, b *store.Alert) int {
		return cmp.Or(strings.Compare(string(a.State), string(b.State)), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	var firing, resolved int
	ids := make([]string, len(group))
	var text strings.Builder
	severity := ""
	for i, a := range group {
		ids[i] = a.ID
		if a.State == store.AlertFiring {
			firing++
			severity = a.Severity
			text.WriteString(firingLine(a) + "\n")
		} else {
			resolved++
			if severity == "" {
				severity = a.Severity
			}
			fmt.Fprintf(&text, "RESOLVED %s (fired %s, resolved %s)\n", a.Summary, a.FiredAt.Format(time.RFC3339), a.ResolvedAt.Format(time.RFC3339))
		}
	}
	var parts []string
	status := "resolved"
	if firing > 0 {
		parts = append(parts, "FIRING:"+strconv.Itoa(firing))
		status = "firing"
	}
	if resolved > 0 {
		parts = append(parts, "RESOLVED:"+strconv.Itoa(resolved))
	}
	return notify.Event{
		Kind:  notify.KindAlert,
		ID:    newID(),
		Time:  now,
		Title: fmt.Sprintf("[%s] %s", strings.Join(parts, " "), rule),
		Text:  strings.TrimRight(text.String(), "\n"),
		Attributes: map[string]string{
			"rule": rule, "severity": severity, "status": status,
			"firing": strconv.Itoa(firing), "resolved": strconv.Itoa(resolved),
			"alert_ids": strings.Join(ids, ","),
		},
	}
}

// firingLine is a FIRING alert's line in an event's text.
func firingLine(a *store.Alert) string {
	return fmt.Sprintf("FIRING [%s] %s (since %s, alert %s)", a.Severity, a.Summary, a.ActiveSince.Format(time.RFC3339), a.ID)
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func silencedBy(silences []*store.Silence, a *store.Alert) *store.Silence {
	for _, s := range silences {
		if s.Matches(a.Rule, a.Labels) {
			return s
		}
	}
	return nil
}

// Fingerprint identifies a label set: the same labels, in any order, give
// the same fingerprint.
func Fingerprint(labels map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(labels[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
