package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// whoAmI calls WhoAmI with secret.
func (b *testBundle) whoAmI(t *testing.T, secret string) (*factoryv1.WhoAmIResponse, error) {
	t.Helper()
	return factoryv1.NewAccessServiceClient(b.dialAs(t, secret)).WhoAmI(context.Background(), &factoryv1.WhoAmIRequest{})
}

// The old secret works through the grace period and is refused as
// expired from its end on (the clock is the server's, faked); the new
// secret works at once, with the old token's subject and grant.
func TestRotateTokensGraceAtTheAuthLayer(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx := context.Background()
	oldSecret, oldTok := b.mintToken(t, store.RoleAgent, "forge", "builder", "tester")
	otherSecret, _ := b.mintToken(t, store.RoleAgent, "anvil")
	hostSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	// Used once, so this replica's cache holds the old token as it was.
	if _, err := b.whoAmI(t, oldSecret); err != nil {
		t.Fatal(err)
	}

	op := factoryv1.NewAccessServiceClient(b.conn)
	resp, err := op.RotateTokens(ctx, &factoryv1.RotateTokensRequest{Role: factoryv1.Role_ROLE_AGENT, Subjects: []string{"forge"}, Grace: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRotated()) != 1 {
		t.Fatalf("rotated %d tokens, want 1 (forge's): %v", len(resp.GetRotated()), resp)
	}
	rt := resp.GetRotated()[0]
	if rt.GetOldToken().GetId() != oldTok.ID || !rt.GetOldToken().GetExpiresAt().AsTime().Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("old token %v, want %s expiring in 1h", rt.GetOldToken(), oldTok.ID)
	}

	who, err := b.whoAmI(t, rt.GetSecret())
	if err != nil {
		t.Fatalf("new secret at once: %v", err)
	}
	if who.GetSubject() != "forge" || who.GetRole() != factoryv1.Role_ROLE_AGENT || strings.Join(who.GetRoles(), ",") != "builder,tester" || who.GetTokenId() != rt.GetNewToken().GetId() {
		t.Fatalf("new secret is %v, want agent forge granted builder,tester", who)
	}
	clock.Advance(time.Hour - time.Second)
	if who, err := b.whoAmI(t, oldSecret); err != nil || who.GetTokenId() != oldTok.ID {
		t.Fatalf("old secret within the grace: %v %v", who, err)
	}
	clock.Advance(time.Second)
	_, err = b.whoAmI(t, oldSecret)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "expired at 2031-03-14T10:00:00Z") {
		t.Fatalf("old secret after the grace: %v, want UNAUTHENTICATED, expired", err)
	}
	for name, secret := range map[string]string{"new": rt.GetSecret(), "not rotated (anvil)": otherSecret, "sidecar": hostSecret} {
		if _, err := b.whoAmI(t, secret); err != nil {
			t.Fatalf("%s secret after the grace: %v", name, err)
		}
	}

	// Audited: one entry for the rotated token, naming its replacement.
	audit, err := op.ListAudit(ctx, &factoryv1.ListAuditRequest{Target: oldTok.ID})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range audit.GetEntries() {
		if e.GetRpc() != factoryv1.AccessService_RotateTokens_FullMethodName {
			continue
		}
		var after map[string]any
		if err := json.Unmarshal([]byte(e.GetAfterJson()), &after); err != nil {
			t.Fatal(err)
		}
		found = after["replaced_by"] == rt.GetNewToken().GetId() && after["expires_at"] == "2031-03-14T10:00:00Z" && e.GetWho() != ""
	}
	if !found {
		t.Fatalf("no RotateTokens audit entry naming the replacement: %v", audit.GetEntries())
	}
}

func TestRotateTokensRefusals(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	op := factoryv1.NewAccessServiceClient(b.conn)
	_, err := op.RotateTokens(ctx, &factoryv1.RotateTokensRequest{Role: factoryv1.Role_ROLE_OPERATOR})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "operator tokens are not rotated") {
		t.Fatalf("operator rotation: %v, want INVALID_ARGUMENT saying operator tokens are not rotated", err)
	}
	agentSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	sidecarSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	for name, secret := range map[string]string{"agent": agentSecret, "sidecar": sidecarSecret} {
		_, err := factoryv1.NewAccessServiceClient(b.dialAs(t, secret)).RotateTokens(ctx, &factoryv1.RotateTokensRequest{Role: factoryv1.Role_ROLE_AGENT})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s rotating: %v, want PERMISSION_DENIED", name, err)
		}
	}
	// Nothing was rotated by the refused calls.
	if _, err := b.whoAmI(t, agentSecret); err != nil {
		t.Fatal(err)
	}
	list, err := op.ListTokens(ctx, &factoryv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range list.GetTokens() {
		if tok.GetExpiresAt() != nil {
			t.Fatalf("token %v got an expiry from a refused rotation", tok)
		}
	}
}

// Only an operator sets a new task's history (an import); an agent
// setting it is refused, naming the field.
func TestCreateTaskHistoryIsOperatorsOnly(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	agentSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	agentQ := factoryv1.NewQueueServiceClient(b.dialAs(t, agentSecret))
	for field, req := range map[string]*factoryv1.CreateTaskRequest{
		"attempt":    {Title: "x", Attempt: 1},
		"last_error": {Title: "x", LastError: "boom"},
		"progress":   {Title: "x", Progress: "half"},
	} {
		_, err := agentQ.CreateTask(ctx, req)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "may not set "+field) {
			t.Fatalf("agent setting %s: %v, want PERMISSION_DENIED naming it", field, err)
		}
	}
	_, err := agentQ.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{{Title: "a"}, {Title: "b", Attempt: 2}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "tasks[1].attempt") {
		t.Fatalf("agent batch setting attempt: %v, want PERMISSION_DENIED naming tasks[1].attempt", err)
	}
	// Without history an agent still creates tasks.
	if _, err := agentQ.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "plain"}); err != nil {
		t.Fatal(err)
	}

	resp, err := b.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{
		{TaskId: "imported", Title: "imported", MaxAttempts: 5, Attempt: 2, LastError: "rate limited", Progress: "half way"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "imported"})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []*factoryv1.Task{resp.GetTasks()[0], got.GetTask()} {
		if task.GetAttempt() != 2 || task.GetLastError() != "rate limited" || task.GetProgress() != "half way" {
			t.Fatalf("imported task %v lost its history", task)
		}
	}
	_, err = b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "over", Attempt: 4})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "attempt") {
		t.Fatalf("attempt beyond max_attempts: %v, want INVALID_ARGUMENT on attempt", err)
	}
}
