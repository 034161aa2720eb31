package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/digest"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// DigestConfig configures the morning digest and maintenance mode's
// notifications.
type DigestConfig struct {
	// At is the local time of day the digest is sent ("08:00", the
	// default); "off" sends none (GetDigest still answers).
	At string
	// TimeZone is the factory's IANA zone: the digest's day and send time
	// are local to it (default Pacific/Auckland, the runbook's).
	TimeZone string
	// Publisher receives the digest and maintenance starts and ends
	// (default: dropped).
	Publisher notify.Publisher
	// Spend and Approvals feed the digest; nil shows "n/a".
	Spend     digest.SpendSource
	Approvals digest.ApprovalSource
}

// newOpsDomains builds maintenance mode (installing its claim gate on q)
// and the digest.
func newOpsDomains(ctx context.Context, cfg DigestConfig, st store.Store, q *queue.Service, fl *fleet.Registry, clock queue.Clock, log *slog.Logger) (*maintenance.Service, *digest.Service, error) {
	zone := cfg.TimeZone
	if zone == "" {
		zone = budget.DefaultTimeZone
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, nil, fmt.Errorf("time zone %q: %w", zone, err)
	}
	mcfg := maintenance.Config{Store: st, Queue: q, Logger: log, Publisher: cfg.Publisher}
	dcfg := digest.Config{Store: st, Spend: cfg.Spend, Approvals: cfg.Approvals, Agents: fl, Infra: FleetInfra{Fleet: fl},
		Location: loc, At: cfg.At, Publisher: cfg.Publisher, Logger: log}
	if cfg.At == "off" {
		dcfg.At = ""
	}
	if clock != nil {
		mcfg.Clock, dcfg.Clock = clock, clock
	}
	m, err := maintenance.New(ctx, mcfg)
	if err != nil {
		return nil, nil, err
	}
	d, err := digest.New(dcfg)
	if err != nil {
		return nil, nil, err
	}
	return m, d, nil
}

// joinPauseHolders lets the emergency stop and maintenance mode, which
// both pause the queue, leave it paused for each other: whichever ends
// last resumes it; while either is on, an operator's resume is refused.
func joinPauseHolders(q *queue.Service, b *budget.Service, m *maintenance.Service) {
	partners := &queue.PausePartners{}
	b.SetPausePartners(partners)
	m.SetPausePartners(partners)
	q.SetPauseHolders(partners)
}

// runDigest sends the digest daily, on the elected replica alone when
// replicas share a database.
func runDigest(ctx context.Context, g *errgroup.Group, cfg DigestConfig, raw store.Store, d *digest.Service) {
	if cfg.At == "off" {
		return
	}
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(ctx, "digest", d.Run) })
		return
	}
	g.Go(func() error { return d.Run(ctx) })
}

// BudgetSpend feeds the digest from the budget domain's day totals.
type BudgetSpend struct{ Budget *budget.Service }

var _ digest.SpendSource = BudgetSpend{}

// DigestSpend implements digest.SpendSource: the day before day, and the
// average of the seven days before that.
func (b BudgetSpend) DigestSpend(ctx context.Context, day time.Time) (*digest.Spend, error) {
	total := func(d time.Time) (int64, error) {
		n, _, _, _, err := b.Budget.DayTotals(ctx, b.Budget.DayOf(d))
		return n, err
	}
	// Noon of each day, so a daylight-saving change cannot land on the
	// neighbouring day.
	noon := day.Add(12 * time.Hour)
	var out digest.Spend
	var err error
	if out.Yesterday, err = total(noon.AddDate(0, 0, -1)); err != nil {
		return nil, err
	}
	var week int64
	for i := 2; i <= 8; i++ {
		n, err := total(noon.AddDate(0, 0, -i))
		if err != nil {
			return nil, err
		}
		week += n
	}
	out.WeekAverage = week / 7
	return &out, nil
}

// ApprovalCount feeds the digest the number of approvals pending.
type ApprovalCount struct{ Approvals *approval.Service }

var _ digest.ApprovalSource = ApprovalCount{}

// PendingApprovals implements digest.ApprovalSource.
func (a ApprovalCount) PendingApprovals(ctx context.Context) (int64, error) {
	var n int64
	token := ""
	for {
		res, err := a.Approvals.List(ctx, approval.ListParams{States: []store.ApprovalState{store.ApprovalPending}, PageSize: 1000, PageToken: token})
		if err != nil {
			return 0, err
		}
		n += int64(len(res.Approvals))
		if token = res.NextCursor; token == "" {
			return n, nil
		}
	}
}
