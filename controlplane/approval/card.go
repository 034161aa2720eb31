package approval

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
)

// Card is the approval card (runbook §9.2): what, why, agent, risk,
// deadline and how to reply, as plain text ready to paste into chat.
func Card(a *store.Approval, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  [Tier %d, risk %s]\n", cardHeadline(a), a.Tier, a.Risk)
	fmt.Fprintf(&b, "What: %s\n", a.What)
	if a.Why != "" {
		fmt.Fprintf(&b, "Why: %s\n", a.Why)
	}
	fmt.Fprintf(&b, "Agent: %s\n", a.Agent)
	if a.Kind != "" {
		fmt.Fprintf(&b, "Kind: %s\n", a.Kind)
	}
	if a.TaskID != "" {
		fmt.Fprintf(&b, "Task: %s\n", a.TaskID)
	}
	fmt.Fprintf(&b, "Payload SHA-256: %s\n", a.PayloadSHA256)
	switch {
	case a.State == store.ApprovalPending:
		fmt.Fprintf(&b, "Deadline: %s (%s left); then default: %s\n", a.Deadline.UTC().Format(time.RFC3339),
			TimeLeft(a, now).Round(time.Second), defaultWord(a.DefaultOnTimeout))
		fmt.Fprintf(&b, "Reply:\n  factory approve %s [--note TEXT]\n  factory reject %s --reason TEXT\n  factory modify %s --instructions TEXT\n", a.ID, a.ID, a.ID)
	case a.State == store.ApprovalExpired:
		fmt.Fprintf(&b, "No decision by %s: default applied: %s\n", a.Deadline.UTC().Format(time.RFC3339), defaultWord(a.Outcome))
	default:
		fmt.Fprintf(&b, "Decided by %s at %s\n", a.DecidedBy, a.DecidedAt.UTC().Format(time.RFC3339))
		if a.Reason != "" {
			fmt.Fprintf(&b, "Reason: %s\n", a.Reason)
		}
		if a.Instructions != "" {
			fmt.Fprintf(&b, "Instructions: %s\n", a.Instructions)
		}
	}
	fmt.Fprintf(&b, "Id: %s", a.ID)
	return b.String()
}

func cardHeadline(a *store.Approval) string {
	switch a.State {
	case store.ApprovalPending:
		return "APPROVAL NEEDED"
	case store.ApprovalApproved:
		if a.AutoApproved {
			return "AUTO-APPROVED (policy)"
		}
		return "APPROVED"
	case store.ApprovalRejected:
		return "REJECTED"
	case store.ApprovalModified:
		return "APPROVED WITH CHANGES"
	case store.ApprovalExpired:
		return "EXPIRED"
	}
	return a.State.String()
}

func defaultWord(d store.ApprovalDecision) string {
	if d == store.DecisionApprove {
		return "approve"
	}
	return "deny"
}

// TimeLeft is how long a PENDING request has until its deadline; zero
// for a final one or one past due.
func TimeLeft(a *store.Approval, now time.Time) time.Duration {
	if a.State != store.ApprovalPending {
		return 0
	}
	return max(a.Deadline.Sub(now), 0)
}

// notify publishes the card; what is "requested", "auto-approved",
// "reminder", "decided" or "expired".
func (s *Service) notify(ctx context.Context, a *store.Approval, what string) {
	now := s.clock.Now()
	id, _ := uuid.NewV7()
	title := fmt.Sprintf("%s: %s (%s)", cardHeadline(a), a.What, a.Agent)
	if what == "reminder" {
		title = "Reminder: " + title
	}
	text := Card(a, now)
	link := s.Link(a.ID)
	if link != "" {
		// One tap from the chat app to the decision.
		text += "\nOpen: " + link
	}
	s.pub.Publish(ctx, notify.Event{
		Kind:  notify.KindApproval,
		ID:    id.String(),
		Time:  now,
		Title: title,
		Text:  text,
		Attributes: map[string]string{
			"url":      link,
			"id":       a.ID,
			"agent":    a.Agent,
			"risk":     a.Risk.String(),
			"tier":     strconv.Itoa(int(a.Tier)),
			"deadline": a.Deadline.UTC().Format(time.RFC3339),
			"state":    a.State.String(),
			"event":    what,
			"task_id":  a.TaskID,
		},
	})
}

// Link is the address of an approval's page in the operator console, or
// empty when no console URL is configured.
func (s *Service) Link(id string) string {
	if s.cfg.ConsoleURL == "" {
		return ""
	}
	return strings.TrimRight(s.cfg.ConsoleURL, "/") + "/approvals/" + id
}
