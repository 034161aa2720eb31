package ops_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
)

// An audit entry standing for many identical refusals keeps its count and
// last-seen time through a dump file; an entry from a dump written before
// they existed is one call, last seen at its time.
func TestAuditCountsSurviveTheDumpFile(t *testing.T) {
	first := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	w, err := ops.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	in := &store.AuditEntry{ID: 7, Time: first, Who: "looper", Role: store.RoleAgent, TokenID: "tok", RPC: "/factory.v1.QueueService/PauseQueue",
		Outcome: "PERMISSION_DENIED", Detail: "operators only", Count: 43995, LastSeen: first.Add(20 * time.Second)}
	if err := w.Write(&store.DumpRecord{Audit: in}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rec, err := ops.NewReader(&buf).Next()
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Audit; got == nil || got.Count != in.Count || !got.LastSeen.Equal(in.LastSeen) {
		t.Fatalf("read back %+v, want count %d and last seen %s", got, in.Count, in.LastSeen)
	}

	old := `{"format":"factory-dump","version":1}` + "\n" +
		`{"kind":"audit","audit":{"id":1,"time":"2026-01-02T03:04:05.000000Z","who":"ops","role":"operator","token_id":"t","rpc":"/x","target":"","before_json":"","after_json":"","trace_id":"","outcome":"OK","detail":""}}` + "\n"
	rec, err = ops.NewReader(strings.NewReader(old)).Next()
	if err != nil {
		t.Fatal(err)
	}
	if n, last := store.AuditCounts(rec.Audit); n != 1 || !last.Equal(rec.Audit.Time) {
		t.Fatalf("an entry from an old dump stands for %d calls, last seen %s; want 1 at %s", n, last, rec.Audit.Time)
	}
}
