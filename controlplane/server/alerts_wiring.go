package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// NotifyConfig says where operator-facing events go besides the
// WatchEvents stream.
type NotifyConfig struct {
	// Webhooks receive every event (or the kinds each names) as a signed
	// JSON POST.
	Webhooks []notify.Webhook
	// WebhookSecret signs the hooks that have no secret of their own.
	WebhookSecret string
	// WebhookAttempts and WebhookTimeout tune delivery; zero takes the
	// defaults (5 attempts, 10s each).
	WebhookAttempts int
	WebhookTimeout  time.Duration
}

// AlertsConfig configures the alert rules.
type AlertsConfig struct {
	// File is the rules file (see deploy/alerts.yaml); empty runs the
	// built-in rules.
	File string
	// Off stops evaluation; the alert RPCs still answer.
	Off bool

	// backups feeds the backup_stale rule (backup_wiring.go).
	backups alert.BackupSource
}

// notifier is the control plane's one Publisher: the WatchEvents hub and
// the webhooks, fed by every domain that has something to say.
type notifier struct {
	hub   *notify.Hub
	hooks *notify.Webhooks
	relay *eventRelay // nil without replicas
	// Notifier is what domains publish into.
	Notifier notify.Publisher
}

func newNotifier(cfg NotifyConfig, raw store.Store, log *slog.Logger) (*notifier, error) {
	hooks := make([]notify.Webhook, len(cfg.Webhooks))
	copy(hooks, cfg.Webhooks)
	for i := range hooks {
		if hooks[i].Secret == "" {
			hooks[i].Secret = cfg.WebhookSecret
		}
	}
	n := &notifier{hub: notify.NewHub(0)}
	pubs := notify.Fanout{n.hub}
	if len(hooks) > 0 {
		w, err := notify.NewWebhooks(notify.WebhooksConfig{Hooks: hooks, MaxAttempts: cfg.WebhookAttempts,
			Timeout: cfg.WebhookTimeout, Logger: log})
		if err != nil {
			return nil, err
		}
		n.hooks = w
		pubs = append(pubs, w)
	}
	if r, ok := raw.(store.EventRelay); ok {
		n.relay = &eventRelay{r: r, hub: n.hub, q: make(chan notify.Event, 256), log: log}
		pubs = append(pubs, n.relay)
	}
	n.Notifier = pubs
	return n, nil
}

// run delivers webhooks until ctx ends. Every replica delivers what it
// publishes itself.
func (n *notifier) run(ctx context.Context, g *errgroup.Group) {
	if n.hooks != nil {
		g.Go(func() error { return n.hooks.Run(ctx) })
	}
	if n.relay != nil {
		g.Go(func() error { return n.relay.send(ctx) })
		g.Go(func() error { return n.relay.listen(ctx) })
	}
}

// eventRelay passes events between the replicas' hubs: what one publishes
// reaches WatchEvents streams on every replica. Webhooks are not relayed:
// the publishing replica delivers them, once.
type eventRelay struct {
	r   store.EventRelay
	hub *notify.Hub
	q   chan notify.Event
	log *slog.Logger
}

// Publish implements notify.Publisher; a full queue drops the event for
// the other replicas (this replica's hub has it).
func (r *eventRelay) Publish(_ context.Context, e notify.Event) {
	select {
	case r.q <- e:
	default:
		r.log.Warn("event relay queue full: event not relayed to other replicas", "event", e.ID, "kind", string(e.Kind))
	}
}

func (r *eventRelay) send(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-r.q:
			if err := r.r.RelayEvent(ctx, relayPayload(e)); err != nil && ctx.Err() == nil {
				r.log.WarnContext(ctx, "relaying an event to other replicas failed", "event", e.ID, "err", err)
			}
		}
	}
}

func (r *eventRelay) listen(ctx context.Context) error {
	return r.r.ListenEvents(ctx, func(p []byte) {
		var b notify.Body
		if err := json.Unmarshal(p, &b); err != nil {
			r.log.WarnContext(ctx, "undecodable relayed event", "err", err)
			return
		}
		r.hub.Publish(ctx, notify.Event{ID: b.ID, Kind: b.Kind, Time: b.Time, Title: b.Title, Text: b.Text, Attributes: b.Attributes})
	})
}

// relayPayload encodes e as a webhook body, its text cut to fit a
// notification.
func relayPayload(e notify.Event) []byte {
	body := notify.Body{ID: e.ID, Kind: e.Kind, Time: e.Time, Title: e.Title, Text: e.Text, Attributes: e.Attributes}
	for {
		p, err := json.Marshal(body)
		if err != nil || len(p) <= store.MaxRelayPayload || body.Text == "" {
			return p
		}
		cut := max(0, len(body.Text)-(len(p)-store.MaxRelayPayload)-len("…"))
		body.Text = strings.ToValidUTF8(body.Text[:cut], "") + "…"
		if cut == 0 {
			body.Text = ""
		}
	}
}

// newAlerts builds the alert evaluator on the queue's store, the fleet and
// (when there is one) the budget's spend.
func newAlerts(cfg AlertsConfig, st store.Store, fl *fleet.Registry, events *fleet.Events, bud *budget.Service, clock queue.Clock, pub notify.Publisher, log *slog.Logger) (*alert.Service, error) {
	acfg := alert.Config{Store: st, Publisher: pub, Logger: log,
		Sources: alert.Sources{Queue: st, Fleet: alert.FleetRegistry(fl, events, telemetryReading)}}
	if clock != nil {
		acfg.Clock = clock
	}
	if bud != nil {
		acfg.Sources.Spend = budgetSpend{bud}
		acfg.Sources.LLM = budgetLLM{bud}
	}
	acfg.Sources.Backup = cfg.backups
	if cfg.File != "" {
		f, err := alert.LoadFile(cfg.File)
		if err != nil {
			return nil, err
		}
		acfg = acfg.FromFile(f)
	}
	return alert.New(acfg)
}

// runAlerts evaluates the rules, on the elected replica alone when
// replicas share a database.
func runAlerts(ctx context.Context, g *errgroup.Group, cfg AlertsConfig, raw store.Store, a *alert.Service) {
	if cfg.Off || a == nil {
		return
	}
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(ctx, "alerts", a.Run) })
		return
	}
	g.Go(func() error { return a.Run(ctx) })
}

// budgetSpend reads today's spend from the budget's ledger.
type budgetSpend struct{ b *budget.Service }

func (s budgetSpend) SpendToday(ctx context.Context) (*alert.Spend, error) {
	total, byAgent, byTier, _, err := s.b.DayTotals(ctx, s.b.Today())
	if err != nil {
		return nil, err
	}
	return &alert.Spend{TotalMicros: total, AgentMicros: byAgent, TierMicros: byTier}, nil
}

// budgetLLM counts the LLM calls the budget recorded lately.
type budgetLLM struct{ b *budget.Service }

func (s budgetLLM) LLMRequests(context.Context) ([]alert.LLMRequests, error) {
	counts := s.b.LLMRequests()
	out := make([]alert.LLMRequests, len(counts))
	for i, c := range counts {
		out[i] = alert.LLMRequests{Provider: c.Provider, Model: c.Model, Requests: c.Requests, Failures: c.Failures}
	}
	return out, nil
}

// telemetryReading turns a sidecar's latest telemetry into the readings
// the alert rules measure.
func telemetryReading(host string, t any) alert.HostReading {
	r := alert.HostReading{Host: host}
	tel, ok := t.(*factoryv1.Telemetry)
	if !ok {
		return r
	}
	for _, g := range tel.GetGpus() {
		r.GPUs = append(r.GPUs, alert.GPUReading{Index: int(g.GetIndex()), UsedBytes: g.GetMemoryUsedBytes(), TotalBytes: g.GetMemoryTotalBytes(), Error: g.GetError()})
	}
	for _, d := range tel.GetDisks() {
		if d.GetError() == "" {
			r.Disks = append(r.Disks, alert.DiskReading{Path: d.GetPath(), UsedBytes: d.GetUsedBytes(), TotalBytes: d.GetTotalBytes(), AvailableBytes: d.GetAvailableBytes()})
		}
	}
	for _, p := range tel.GetProbes() {
		r.Probes = append(r.Probes, alert.ProbeReading{Service: p.GetName(), OK: p.GetOk(), Detail: p.GetDetail()})
	}
	r.NVMLError = tel.GetNvmlError()
	return r
}
