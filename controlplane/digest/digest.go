// Package digest builds the morning digest (runbook §3.1): what the
// factory did overnight (tasks completed, failed and stuck), yesterday's
// spend against the week before, the dead letter, agent health and the
// infrastructure, rendered as the plain-text card an operator reads over
// coffee. A scheduler sends it daily at a configured local time, on the
// one replica that holds the "digest" election.
package digest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
)

// Spend is the spend the digest compares, in micro-dollars.
type Spend struct {
	// Yesterday is the spend of the day before the digest's day.
	Yesterday int64
	// WeekAverage is the average daily spend over the 7 days before
	// yesterday.
	WeekAverage int64
}

// SpendSource reports spend for the digest; day is the digest's local
// day (midnight in the configured zone).
type SpendSource interface {
	DigestSpend(ctx context.Context, day time.Time) (*Spend, error)
}

// ApprovalSource counts the approvals waiting for an operator.
type ApprovalSource interface {
	PendingApprovals(ctx context.Context) (int64, error)
}

// InfraSource describes the infrastructure in one line per finding (a GPU
// nearly out of memory, a full disk, a failing probe; or that all is well).
type InfraSource interface {
	Infrastructure(ctx context.Context) ([]string, error)
}

// AgentSource lists the agents with their liveness: the fleet registry.
type AgentSource interface {
	Agents() []fleet.Agent
}

// Clock is the time source.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Config configures a Service. Store is required; a source left nil shows
// as "n/a" in the digest.
type Config struct {
	Store     store.Store
	Spend     SpendSource
	Approvals ApprovalSource
	Agents    AgentSource
	Infra     InfraSource
	// Location is the zone of the factory's day: the window's start, the
	// send time and "yesterday" are local to it (default UTC).
	Location *time.Location
	// At is the local time of day the digest is sent ("08:00").
	At string
	// EveningHour is the hour of the previous day the default window
	// starts at (18).
	EveningHour int
	// StuckAfter is how long an IN_PROGRESS task goes without a renewal
	// before the digest calls it stuck (1h).
	StuckAfter time.Duration
	Publisher  notify.Publisher
	Logger     *slog.Logger
	Clock      Clock
	// After waits; tests replace it to fire the daily timer at once.
	After func(d time.Duration) <-chan time.Time
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.At == "" {
		c.At = "08:00"
	}
	if c.EveningHour == 0 {
		c.EveningHour = 18
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = time.Hour
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
	if c.After == nil {
		c.After = time.After
	}
	return c
}

// ParseAt reads a local time of day "HH:MM".
func ParseAt(at string) (hour, minute int, err error) {
	t, err := time.Parse("15:04", at)
	if err != nil {
		return 0, 0, fmt.Errorf("digest time %q: want HH:MM (24-hour)", at)
	}
	return t.Hour(), t.Minute(), nil
}

// Service builds and sends digests.
type Service struct {
	cfg          Config
	hour, minute int
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if cfg.Store == nil {
		return nil, errors.New("digest: Config.Store is required")
	}
	h, m, err := ParseAt(cfg.At)
	if err != nil {
		return nil, err
	}
	if cfg.EveningHour < 0 || cfg.EveningHour > 23 {
		return nil, fmt.Errorf("digest: EveningHour %d outside 0..23", cfg.EveningHour)
	}
	return &Service{cfg: cfg, hour: h, minute: m}, nil
}

// Digest is one digest.
type Digest struct {
	Since, Until time.Time
	Location     *time.Location
	Completed    int64
	Failed       int64
	// Stuck are IN_PROGRESS tasks without a renewal for StuckAfter at
	// Until; StuckTasks lists up to five of them.
	Stuck      int64
	StuckTasks []*store.Task
	// DeadLetter counts FAILED tasks at Until; FailedTasks lists up to
	// five that failed in the window.
	DeadLetter  int64
	FailedTasks []*store.Task
	// Spend is nil when unknown.
	Spend *Spend
	// ApprovalsPending is -1 when unknown.
	ApprovalsPending int64
	AgentsOnline     int64
	AgentsStale      int64
	AgentsOffline    int64
	// AgentsDown names the agents not ONLINE.
	AgentsDown     []string
	Infrastructure []string
	// Paused is the queue's pause, if any ("" when running).
	Paused string
}

// DefaultWindow is the window of a digest sent at now: from EveningHour
// the day before, local time, until now.
func (s *Service) DefaultWindow(now time.Time) (since, until time.Time) {
	return s.midnight(now).AddDate(0, 0, -1).Add(time.Duration(s.cfg.EveningHour) * time.Hour), now
}

// midnight is the start of t's local day.
func (s *Service) midnight(t time.Time) time.Time {
	local := t.In(s.cfg.Location)
	return time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, s.cfg.Location)
}

// listed bounds the tasks a digest names.
const listed = 5

// Build builds the digest of [since, until). Zero times take the default
// window at the clock's now.
func (s *Service) Build(ctx context.Context, since, until time.Time) (*Digest, error) {
	dsince, duntil := s.DefaultWindow(s.cfg.Clock.Now())
	if since.IsZero() {
		since = dsince
	}
	if until.IsZero() {
		until = duntil
	}
	if !since.Before(until) {
		return nil, store.InvalidField("since", "the window's start %s is not before its end %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	d := &Digest{Since: since, Until: until, Location: s.cfg.Location, ApprovalsPending: -1}
	st := s.cfg.Store
	qs, err := st.QueueStats(ctx)
	if err != nil {
		return nil, err
	}
	d.DeadLetter = qs.Counts[store.StateFailed]
	if qs.Paused {
		d.Paused = qs.PauseReason
		if d.Paused == "" {
			d.Paused = "paused"
		}
	}
	inWindow := func(t *store.Task) bool { return !t.StateChangedAt.Before(since) && t.StateChangedAt.Before(until) }
	err = eachTask(ctx, st, []store.TaskState{store.StateDone, store.StateFailed, store.StateInProgress}, func(t *store.Task) {
		switch t.State {
		case store.StateDone:
			if inWindow(t) {
				d.Completed++
			}
		case store.StateFailed:
			if inWindow(t) {
				d.Failed++
				if len(d.FailedTasks) < listed {
					d.FailedTasks = append(d.FailedTasks, t)
				}
			}
		case store.StateInProgress:
			if !t.RenewedAt.After(until.Add(-s.cfg.StuckAfter)) {
				d.Stuck++
				if len(d.StuckTasks) < listed {
					d.StuckTasks = append(d.StuckTasks, t)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if s.cfg.Spend != nil {
		sp, err := s.cfg.Spend.DigestSpend(ctx, s.midnight(until))
		if err != nil {
			s.cfg.Logger.WarnContext(ctx, "digest: spend unknown", "err", err)
		} else {
			d.Spend = sp
		}
	}
	if s.cfg.Approvals != nil {
		n, err := s.cfg.Approvals.PendingApprovals(ctx)
		if err != nil {
			s.cfg.Logger.WarnContext(ctx, "digest: approvals unknown", "err", err)
		} else {
			d.ApprovalsPending = n
		}
	}
	if s.cfg.Agents != nil {
		for _, a := range s.cfg.Agents.Agents() {
			switch a.State {
			case fleet.StateOnline:
				d.AgentsOnline++
			case fleet.StateStale:
				d.AgentsStale++
				d.AgentsDown = append(d.AgentsDown, a.Name+" (stale)")
			default:
				d.AgentsOffline++
				d.AgentsDown = append(d.AgentsDown, a.Name+" (offline)")
			}
		}
	}
	if s.cfg.Infra != nil {
		lines, err := s.cfg.Infra.Infrastructure(ctx)
		if err != nil {
			d.Infrastructure = []string{"unknown: " + err.Error()}
		} else {
			d.Infrastructure = lines
		}
	}
	return d, nil
}

// eachTask calls fn with every task in states, page by page.
func eachTask(ctx context.Context, st store.Store, states []store.TaskState, fn func(*store.Task)) error {
	cursor := ""
	for {
		res, err := st.TaskList(ctx, &store.TaskListParams{States: states, Limit: 1000, Cursor: cursor})
		if err != nil {
			return err
		}
		for _, t := range res.Tasks {
			fn(t)
		}
		if res.NextCursor == "" {
			return nil
		}
		cursor = res.NextCursor
	}
}

// Dollars renders micro-dollars as "$12.34".
func Dollars(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	cents := (micros + 5000) / 10000
	return fmt.Sprintf("%s$%d.%02d", sign, cents/100, cents%100)
}

// Title is the digest's one-line summary.
func (d *Digest) Title() string {
	return fmt.Sprintf("Morning digest %s: %d done, %d failed, %d stuck", d.Until.In(d.Location).Format("Mon 2 Jan"), d.Completed, d.Failed, d.Stuck)
}

// Render writes the card: plain text, ready to paste into chat.
func (d *Digest) Render() string {
	var b strings.Builder
	loc := d.Location
	fmt.Fprintf(&b, "Morning digest — %s\n", d.Until.In(loc).Format("Monday 2 January 2006"))
	fmt.Fprintf(&b, "Window: %s → %s (%s)\n\n", d.Since.In(loc).Format("Mon 15:04"), d.Until.In(loc).Format("Mon 15:04"), loc)

	fmt.Fprintf(&b, "Tasks\n")
	fmt.Fprintf(&b, "  %-12s%d\n", "completed", d.Completed)
	fmt.Fprintf(&b, "  %-12s%d\n", "failed", d.Failed)
	for _, t := range d.FailedTasks {
		fmt.Fprintf(&b, "    - %s %q: %s\n", t.ID, t.Title, oneLine(t.LastError, 80))
	}
	fmt.Fprintf(&b, "  %-12s%d\n", "stuck", d.Stuck)
	for _, t := range d.StuckTasks {
		fmt.Fprintf(&b, "    - %s %q held by %s, silent for %s\n", t.ID, t.Title, t.LeaseHolder, span(d.Until.Sub(t.RenewedAt)))
	}
	fmt.Fprintf(&b, "  %-12s%d\n", "dead letter", d.DeadLetter)
	if d.Paused != "" {
		fmt.Fprintf(&b, "  queue PAUSED: %s\n", d.Paused)
	}

	fmt.Fprintf(&b, "\nSpend\n")
	if d.Spend == nil {
		fmt.Fprintf(&b, "  n/a\n")
	} else {
		fmt.Fprintf(&b, "  %-12s%s\n", "yesterday", Dollars(d.Spend.Yesterday))
		fmt.Fprintf(&b, "  %-12s%s", "7-day avg", Dollars(d.Spend.WeekAverage))
		if d.Spend.WeekAverage > 0 {
			pct := (d.Spend.Yesterday - d.Spend.WeekAverage) * 100 / d.Spend.WeekAverage
			fmt.Fprintf(&b, " (yesterday %+d%%)", pct)
		}
		fmt.Fprintf(&b, "\n")
	}

	fmt.Fprintf(&b, "\nApprovals pending: ")
	if d.ApprovalsPending < 0 {
		fmt.Fprintf(&b, "n/a\n")
	} else {
		fmt.Fprintf(&b, "%d\n", d.ApprovalsPending)
	}

	fmt.Fprintf(&b, "\nAgents: %d online, %d stale, %d offline\n", d.AgentsOnline, d.AgentsStale, d.AgentsOffline)
	for _, a := range d.AgentsDown {
		fmt.Fprintf(&b, "  - %s\n", a)
	}

	fmt.Fprintf(&b, "\nInfrastructure\n")
	if len(d.Infrastructure) == 0 {
		fmt.Fprintf(&b, "  n/a\n")
	}
	for _, l := range d.Infrastructure {
		fmt.Fprintf(&b, "  - %s\n", l)
	}
	return b.String()
}

// span renders a duration in hours and minutes ("6h", "1h30m", "45m").
func span(d time.Duration) string {
	d = d.Round(time.Minute)
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return fmt.Sprintf("%dm", m)
	case m == 0:
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dh%dm", h, m)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "(no error recorded)"
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// Event is the digest as a notification.
func (d *Digest) Event() notify.Event {
	day := d.Until.In(d.Location).Format("2006-01-02")
	attrs := map[string]string{
		"day":         day,
		"completed":   fmt.Sprint(d.Completed),
		"failed":      fmt.Sprint(d.Failed),
		"stuck":       fmt.Sprint(d.Stuck),
		"dead_letter": fmt.Sprint(d.DeadLetter),
	}
	if d.Spend != nil {
		attrs["spend_yesterday_micros"] = fmt.Sprint(d.Spend.Yesterday)
		attrs["spend_week_average_micros"] = fmt.Sprint(d.Spend.WeekAverage)
	}
	return notify.Event{Kind: notify.KindDigest, ID: "digest-" + day, Time: d.Until, Title: d.Title(), Text: d.Render(), Attributes: attrs}
}

// NextAt is the first send time strictly after now.
func (s *Service) NextAt(now time.Time) time.Time {
	local := now.In(s.cfg.Location)
	next := time.Date(local.Year(), local.Month(), local.Day(), s.hour, s.minute, 0, 0, s.cfg.Location)
	if !next.After(now) {
		next = time.Date(local.Year(), local.Month(), local.Day()+1, s.hour, s.minute, 0, 0, s.cfg.Location)
	}
	return next
}

// Send builds the digest of the default window and publishes it.
func (s *Service) Send(ctx context.Context) error {
	d, err := s.Build(ctx, time.Time{}, time.Time{})
	if err != nil {
		return err
	}
	s.cfg.Publisher.Publish(ctx, d.Event())
	s.cfg.Logger.InfoContext(ctx, "digest sent", "title", d.Title())
	return nil
}

// Run sends the digest daily at the configured local time until ctx ends.
// Run it on one replica (RunElected "digest"). A failed build is logged
// and the next day's goes ahead.
func (s *Service) Run(ctx context.Context) error {
	for {
		now := s.cfg.Clock.Now()
		wait := s.NextAt(now).Sub(now)
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.After(wait):
		}
		if err := s.Send(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.ErrorContext(ctx, "digest failed", "err", err)
		}
	}
}
