package console_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The overview shows what the operator must act on from his phone: a
// selective pause with the command that ends it, and when the last good
// backup was taken.
func TestOverviewShowsSelectivePausesAndTheLastBackup(t *testing.T) {
	f := startFactory(t, func(cfg *server.Config) {
		cfg.Backup = server.BackupConfig{Dir: filepath.Join(cfg.DataDir, "backups"), Every: 6 * time.Hour}
	})
	ctx := context.Background()
	q := factoryv1.NewQueueServiceClient(f.dial(t, f.Operator))
	for _, tier := range []string{"frontier", "mid"} {
		if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: tier + " work", Tier: tier}); err != nil {
			t.Fatal(err)
		}
	}
	paused, err := q.PauseQueue(ctx, &factoryv1.PauseQueueRequest{Reason: "cheaper models",
		Filter: &factoryv1.TaskFilter{Tier: "frontier"}})
	if err != nil {
		t.Fatal(err)
	}
	ops := factoryv1.NewOpsServiceClient(f.dial(t, f.Operator))
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := ops.GetBackupStatus(ctx, &factoryv1.GetBackupStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLastGood() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first scheduled backup was not taken in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	c, _ := secSignedIn(t, f, f.Operator)
	p := secGet(t, c, f.URL+"/")
	if p.status != 200 {
		t.Fatalf("GET /: %d", p.status)
	}
	for _, want := range []string{
		"holds 1 task(s): cheaper models",
		"factory queue resume --pause " + paused.GetPauseId(),
		"Last good backup",
		"every 6h",
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the overview lacks %q", want)
		}
	}
	if strings.Contains(p.body, "No good backup for") {
		t.Error("a fresh backup is reported stale")
	}
}
