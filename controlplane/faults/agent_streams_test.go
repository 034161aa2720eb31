//go:build faults

package faults_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Row 8: a revoked token's open streams stayed open and kept receiving,
// and a revoked sidecar's Connect stream still stored events. Now every
// stream of a revoked token ends with UNAUTHENTICATED saying why within
// about a second, and nothing the sidecar sends afterwards is stored.
func hostileRow08RevokedStreams(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	access := factoryv1.NewAccessServiceClient(op)
	mint := func(role factoryv1.Role, subject string) (secret, id string) {
		resp, err := access.CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: role, Subject: subject})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSecret(), resp.GetToken().GetId()
	}
	agentSecret, agentID := mint(factoryv1.Role_ROLE_AGENT, "forge")
	sidecarSecret, sidecarID := mint(factoryv1.Role_ROLE_SIDECAR, "gpu-01")
	agent, sidecar := dial(t, cp.addr, agentSecret), dial(t, cp.addr, sidecarSecret)

	// The repro's streams: a task watch, an approval wait, a sidecar's
	// Connect; each is seen to be open before the revoke.
	ends := map[string]chan error{}
	watchEnd := func(name string, recv func() error) {
		ch := make(chan error, 1)
		ends[name] = ch
		go func() {
			for {
				if err := recv(); err != nil {
					ch <- err
					return
				}
			}
		}()
	}
	watch, err := factoryv1.NewQueueServiceClient(agent).WatchTasks(ctx, &factoryv1.WatchTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // SYNCED: the watch is open
		t.Fatal(err)
	}
	watchEnd("WatchTasks", func() error { _, err := watch.Recv(); return err })

	approvals := factoryv1.NewApprovalServiceClient(agent)
	req, err := approvals.RequestApproval(ctx, &factoryv1.RequestApprovalRequest{
		What: "deploy to production", Agent: "forge", Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH, Tier: 3, Kind: "production_deploy",
	})
	if err != nil {
		t.Fatal(err)
	}
	wait, err := approvals.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: req.GetApproval().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait.Recv(); err != nil { // the request as it is now
		t.Fatal(err)
	}
	watchEnd("WaitApproval", func() error { _, err := wait.Recv(); return err })

	connect, err := factoryv1.NewFleetServiceClient(sidecar).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := connect.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: "gpu-01", Version: "test"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect.Recv(); err != nil { // the config
		t.Fatal(err)
	}
	sendEvent := func(id string) error {
		return connect.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Events{Events: &factoryv1.FleetEvents{Events: []*factoryv1.FleetEvent{
			{Id: id, Kind: "model_swap", Time: timestamppb.Now(), Attributes: map[string]string{"model": "qwen"}},
		}}}})
	}
	// Before the revoke, the sidecar's events are stored and acked.
	if err := sendEvent("0193a2b4-0000-7000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	if ack, err := connect.Recv(); err != nil || len(ack.GetEventAck().GetIds()) != 1 {
		t.Fatalf("the event before the revoke: %v, %v", ack, err)
	}
	watchEnd("Connect", func() error { _, err := connect.Recv(); return err })

	// Revoke both tokens, then create a task (the repro's trigger).
	revokedAt := time.Now()
	for _, id := range []string{agentID, sidecarID} {
		if _, err := access.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := factoryv1.NewQueueServiceClient(op).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "after the revoke", Role: "builder"}); err != nil {
		t.Fatal(err)
	}
	// The sidecar keeps sending, as a revoked sidecar would.
	lateEvent := "0193a2b4-0000-7000-8000-000000000002"
	_ = sendEvent(lateEvent)

	for name, ch := range ends {
		select {
		case err := <-ch:
			st := status.Convert(err)
			if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "revoked") {
				t.Errorf("%s ended with %v, want UNAUTHENTICATED saying the token was revoked", name, err)
			}
			if took := time.Since(revokedAt); took > 1500*time.Millisecond {
				t.Errorf("%s ended %s after the revoke, want about a second", name, took)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s is still open 3s after its token was revoked", name)
		}
	}
	_ = sendEvent("0193a2b4-0000-7000-8000-000000000003")

	// Nothing the revoked sidecar sent after the revoke was stored.
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(cp.dataDir, "factory.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored, err := st.FleetEventsList(ctx, &store.FleetEventsListParams{Host: "gpu-01", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 {
		ids := make([]string, len(stored))
		for i, e := range stored {
			ids[i] = e.ID
		}
		t.Fatalf("stored events of the revoked sidecar: %v; want only the one sent before the revoke", ids)
	}
}
