package ops_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
)

// A task's spend tier and a tier turned off travel through a dump file;
// a dump written before either existed still reads, as no tier and a
// tier that is on.
func TestTiersSurviveTheDumpFileAndOldDumpsRead(t *testing.T) {
	var buf bytes.Buffer
	w, err := ops.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	task := &store.Task{ID: "t1", Title: "x", State: store.StateReady, MaxAttempts: 3, PayloadJSON: "{}", Tier: store.TierFrontier}
	budget := &store.DumpRow{Table: "budgets", Values: []any{"tier", "frontier", int64(0), int64(25_000_000), int64(0), int64(0),
		task.CreatedAt, true}}
	for _, r := range []*store.DumpRecord{{Task: task}, {Row: budget}} {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := ops.NewReader(&buf)
	rec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Task == nil || rec.Task.Tier != store.TierFrontier {
		t.Fatalf("read back task %+v, want tier frontier", rec.Task)
	}
	if rec, err = r.Next(); err != nil {
		t.Fatal(err)
	}
	if rec.Row == nil || rec.Row.Values[7] != true {
		t.Fatalf("read back budget row %+v, want off", rec.Row)
	}

	old := `{"format":"factory-dump","version":1}` + "\n" +
		`{"kind":"task","task":{"id":"old","title":"Old","kind":"","payload_json":"{}","role":"","assignee":"","priority":0,"state":"READY","attempt":0,"max_attempts":3,"depends_on":[],"approval_tier":0,"labels":{},"last_error":"","progress":"","note":"","lease_holder":"","fencing_token":0,"lease_expires_at":null,"claimed_at":null,"renewed_at":null,"run_after":null,"created_at":"2026-01-02T03:04:05.000000Z","updated_at":"2026-01-02T03:04:05.000000Z","state_changed_at":"2026-01-02T03:04:05.000000Z","paused_by_queue":false,"approval_id":"","approval_pending":false}}` + "\n" +
		`{"kind":"row","row":{"table":"budgets","values":{"alert_micros":25000000,"cap_micros":0,"emergency_micros":0,"key":"frontier","scope":"tier","target_micros":0,"updated_at":"2026-01-02T03:04:05.000000Z"}}}` + "\n"
	r = ops.NewReader(strings.NewReader(old))
	if rec, err = r.Next(); err != nil {
		t.Fatalf("a task from a dump without tiers: %v", err)
	}
	if rec.Task.Tier != "" {
		t.Errorf("an old task reads with tier %q, want none", rec.Task.Tier)
	}
	if rec, err = r.Next(); err != nil {
		t.Fatalf("a budget row from a dump without the off column: %v", err)
	}
	if len(rec.Row.Values) != 8 || rec.Row.Values[7] != false || rec.Row.Values[3] != int64(25_000_000) {
		t.Errorf("an old budget row reads as %v, want its values with off false", rec.Row.Values)
	}
}
