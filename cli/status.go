package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// statusJSON is what `status -o json` prints: each section, or null when
// the control plane does not serve it (or this caller may not read it).
type statusJSON struct {
	Queue            *factoryv1.GetQueueStatsResponse  `json:"queue"`
	Budget           *factoryv1.GetBudgetResponse      `json:"budget"`
	ApprovalsPending *int                              `json:"approvals_pending"`
	Agents           *agentCounts                      `json:"agents"`
	AlertsFiring     []*factoryv1.Alert                `json:"alerts_firing"`
	Maintenance      *factoryv1.GetMaintenanceResponse `json:"maintenance"`
	Unavailable      map[string]string                 `json:"unavailable,omitempty"`

	// Backup is where the scheduled backups stand (status_backup.go).
	Backup *factoryv1.GetBackupStatusResponse `json:"backup"`
}

// agentCounts counts agents by liveness.
type agentCounts struct {
	Online  int `json:"online"`
	Stale   int `json:"stale"`
	Offline int `json:"offline"`
}

// optional says whether err means the section is not served here (an
// older or smaller control plane, or a caller without the right), which
// status shows as n/a rather than failing.
func optional(err error) bool {
	switch status.Code(err) {
	case grpccodes.Unimplemented, grpccodes.PermissionDenied, grpccodes.NotFound:
		return true
	}
	return false
}

// runStatus is `factory status`: every section fetched in parallel over
// one connection, once or every interval with --watch.
func (a *app) runStatus(cmd *cobra.Command, wf *watchFlags) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = a.view(ctx, cmd, wf, paintStatus, func(ctx context.Context, w io.Writer) error {
			out, err := fetchStatus(ctx, conn)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeStatusJSON(w, out)
			}
			return writeStatusScreen(w, out, time.Now())
		})
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// fetchStatus reads every section in parallel. The queue is the one
// section status cannot do without; another that this control plane does
// not serve is left nil and named in Unavailable.
func fetchStatus(ctx context.Context, conn grpc.ClientConnInterface) (*statusJSON, error) {
	q, b, ap := factoryv1.NewQueueServiceClient(conn), factoryv1.NewBudgetServiceClient(conn), factoryv1.NewApprovalServiceClient(conn)
	fl, o := factoryv1.NewFleetServiceClient(conn), factoryv1.NewOpsServiceClient(conn)

	var (
		out    statusJSON
		mu     sync.Mutex
		wg     sync.WaitGroup
		qErr   error
		errors = map[string]string{}
	)
	section := func(name string, fetch func(ctx context.Context) error) {
		wg.Go(func() {
			err := fetch(ctx)
			if err == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if name == "queue" || !optional(err) {
				if qErr == nil {
					qErr = err
				}
				return
			}
			errors[name] = status.Convert(err).Message()
		})
	}
	section("queue", func(ctx context.Context) (err error) {
		out.Queue, err = q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
		return err
	})
	section("budget", func(ctx context.Context) (err error) {
		out.Budget, err = b.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
		return err
	})
	section("approvals", func(ctx context.Context) error {
		n, token := 0, ""
		for {
			resp, err := ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{States: []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_PENDING}, PageSize: 1000, PageToken: token})
			if err != nil {
				return err
			}
			n += len(resp.GetApprovals())
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		out.ApprovalsPending = &n
		return nil
	})
	section("agents", func(ctx context.Context) error {
		resp, err := fl.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
		if err != nil {
			return err
		}
		c := &agentCounts{}
		for _, ag := range resp.GetAgents() {
			switch ag.GetState() {
			case factoryv1.NodeState_NODE_STATE_ONLINE:
				c.Online++
			case factoryv1.NodeState_NODE_STATE_STALE:
				c.Stale++
			default:
				c.Offline++
			}
		}
		out.Agents = c
		return nil
	})
	section("alerts", func(ctx context.Context) error {
		resp, err := o.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
		if err != nil {
			return err
		}
		out.AlertsFiring = []*factoryv1.Alert{}
		for _, al := range resp.GetAlerts() {
			if al.GetState() == factoryv1.AlertState_ALERT_STATE_FIRING {
				out.AlertsFiring = append(out.AlertsFiring, al)
			}
		}
		return nil
	})
	section("maintenance", func(ctx context.Context) (err error) {
		out.Maintenance, err = o.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
		return err
	})
	section("backup", func(ctx context.Context) (err error) {
		out.Backup, err = o.GetBackupStatus(ctx, &factoryv1.GetBackupStatusRequest{})
		return err
	})
	wg.Wait()
	if qErr != nil {
		return nil, qErr
	}
	if len(errors) > 0 {
		out.Unavailable = errors
	}
	return &out, nil
}

// writeStatusScreen prints the one screen: the queue first (as it always
// was), then spend, approvals, agents, alerts, the emergency stop and
// maintenance; a section the control plane does not serve shows n/a.
func writeStatusScreen(w io.Writer, s *statusJSON, now time.Time) error {
	tw := newTable(w)
	q := s.Queue
	fmt.Fprintf(tw, "Queue:\t%s\n", pausedText(q))
	line := ""
	for i, st := range allStates {
		if i > 0 {
			line += "  "
		}
		line += fmt.Sprintf("%s %d", stateName(st), countOf(q, st))
	}
	fmt.Fprintf(tw, "Tasks:\t%s\n", line)
	fmt.Fprintf(tw, "Oldest ready:\t%s\n", humanSpan(q.GetOldestReadyAge()))
	fmt.Fprintf(tw, "Oldest in progress:\t%s\n", humanSpan(q.GetOldestInProgressAge()))
	fmt.Fprintf(tw, "Retrying:\t%d\n", q.GetRetrying())
	if bud := s.Budget; bud != nil {
		var total *factoryv1.BudgetStatus
		for _, st := range bud.GetBudgets() {
			if st.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL {
				total = st
			}
		}
		if total != nil {
			line := fmt.Sprintf("%s of %s target", formatMoney(total.GetSpentMicros()), formatMoney(total.GetBudget().GetTargetMicros()))
			switch {
			case total.GetCapped():
				line += " (CAPPED)"
			case total.GetAlerting():
				line += " (ALERTING)"
			}
			fmt.Fprintf(tw, "Spend today:\t%s (%s, %s)\n", line, bud.GetDay(), bud.GetTimeZone())
		} else {
			fmt.Fprintf(tw, "Spend today:\tno total budget set (%s)\n", bud.GetDay())
		}
		if es := bud.GetEmergencyStop(); es.GetStopped() {
			fmt.Fprintf(tw, "Emergency stop:\tSTOPPED since %s by %s: %s\n", es.GetStoppedAt().AsTime().Format(time.RFC3339), escapeTerminal(es.GetStoppedBy()), escapeTerminal(es.GetReason()))
		} else {
			fmt.Fprintf(tw, "Emergency stop:\tarmed\n")
		}
	} else {
		fmt.Fprintf(tw, "Spend today:\tn/a\nEmergency stop:\tn/a\n")
	}
	if s.ApprovalsPending != nil {
		fmt.Fprintf(tw, "Approvals pending:\t%d\n", *s.ApprovalsPending)
	} else {
		fmt.Fprintf(tw, "Approvals pending:\tn/a\n")
	}
	if c := s.Agents; c != nil {
		fmt.Fprintf(tw, "Agents:\t%d online, %d stale, %d offline\n", c.Online, c.Stale, c.Offline)
	} else {
		fmt.Fprintf(tw, "Agents:\tn/a\n")
	}
	if s.AlertsFiring != nil {
		fmt.Fprintf(tw, "Alerts firing:\t%d\n", len(s.AlertsFiring))
		for _, al := range s.AlertsFiring {
			fmt.Fprintf(tw, "\t%s %s: %s (for %s)\n", escapeTerminal(al.GetSeverity()), escapeTerminal(al.GetRule()), escapeTerminal(al.GetSummary()), now.Sub(al.GetFiredAt().AsTime()).Round(time.Second))
		}
	} else {
		fmt.Fprintf(tw, "Alerts firing:\tn/a\n")
	}
	if m := s.Maintenance; m != nil {
		if mm := m.GetMaintenance(); mm.GetActive() {
			fmt.Fprintf(tw, "Maintenance:\tON since %s by %s: %s (%d IN_PROGRESS)\n", mm.GetStartedAt().AsTime().Format(time.RFC3339), escapeTerminal(mm.GetStartedBy()), escapeTerminal(mm.GetReason()), m.GetInProgressCount())
		} else {
			fmt.Fprintf(tw, "Maintenance:\toff\n")
		}
	} else {
		fmt.Fprintf(tw, "Maintenance:\tn/a\n")
	}
	writeBackupStatus(tw, s.Backup)
	return tw.Flush()
}

// writeStatusJSON prints the sections, each proto in its canonical JSON
// form (as every other -o json prints it), null when n/a.
func writeStatusJSON(w io.Writer, s *statusJSON) error {
	raw := func(m proto.Message) (json.RawMessage, error) {
		if reflect.ValueOf(m).IsNil() {
			return json.RawMessage("null"), nil
		}
		return protoJSON(m)
	}
	out := map[string]any{"approvals_pending": s.ApprovalsPending, "agents": s.Agents}
	for name, m := range map[string]proto.Message{"queue": s.Queue, "budget": s.Budget, "maintenance": s.Maintenance, "backup": s.Backup} {
		r, err := raw(m)
		if err != nil {
			return err
		}
		out[name] = r
	}
	if s.AlertsFiring == nil {
		out["alerts_firing"] = nil
	} else {
		alerts := make([]json.RawMessage, 0, len(s.AlertsFiring))
		for _, al := range s.AlertsFiring {
			r, err := protoJSON(al)
			if err != nil {
				return err
			}
			alerts = append(alerts, r)
		}
		out["alerts_firing"] = alerts
	}
	if len(s.Unavailable) > 0 {
		out["unavailable"] = s.Unavailable
	}
	return writeJSON(w, out)
}
