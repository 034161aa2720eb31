//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Row 7: one sidecar reconnected 100 times, each Hello naming 256 new
// agents; the registry kept all 25,600 until a restart and ListAgents
// answered 3.4 MB. It connects with the operator token, as `make run`'s
// sidecar does: that is the connection that may declare agents placed
// nowhere, so every one of them is registered (a sidecar token would have
// them all refused). A host's agents are now those of its latest Hello.
func floodRow07GhostAgents(t *testing.T) {
	const reconnects, perHello = 100, 256
	f := newFlood(t)
	fleet := factoryv1.NewFleetServiceClient(f.op)
	hellos := 0
	var lastErr error
	var took time.Duration
	f.underLoad(t, 250, func(ctx context.Context) {
		start := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			stream, err := fleet.Connect(ctx)
			if err != nil {
				lastErr = err
				continue
			}
			hello := &factoryv1.Hello{Host: "flood-host"}
			for j := range perHello {
				hello.Agents = append(hello.Agents, &factoryv1.HostedAgent{Name: fmt.Sprintf("ghost-%d-%d", i, j)})
			}
			if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err == nil {
				_, err = stream.Recv() // the config: the Hello was registered
				if err == nil {
					hellos = i + 1
				} else {
					lastErr = err
				}
			}
			_ = stream.CloseSend()
			if hellos >= reconnects {
				took = time.Since(start)
				// The repro's count is reached; keep the last Hello's
				// stream open, as a live sidecar would.
				<-ctx.Done()
				return
			}
		}
	})
	if hellos < reconnects {
		t.Fatalf("only %d of %d Hellos were answered under load; the last error: %v", hellos, reconnects, lastErr)
	}

	// Every agent listed is the last Hello's, or the calm client (an agent
	// is listed on its own queue calls too).
	resp, err := fleet.ListAgents(context.Background(), &factoryv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf("ghost-%d-", hellos-1)
	ghosts := 0
	for _, a := range resp.GetAgents() {
		switch {
		case a.GetName() == "calm":
		case strings.HasPrefix(a.GetName(), last) && a.GetHost() == "flood-host":
			ghosts++
		default:
			t.Errorf("agent %s on %q, of an earlier Hello, is still listed", a.GetName(), a.GetHost())
		}
	}
	size := proto.Size(resp)
	t.Logf("after %d Hellos of %d agents (in %s): ListAgents lists %d agents in %d bytes", hellos, perHello, took.Round(time.Millisecond), len(resp.GetAgents()), size)
	if ghosts > perHello {
		t.Errorf("ListAgents lists %d of flood-host's agents, want at most the last Hello's %d", ghosts, perHello)
	}
	// 256 agents of a few dozen bytes each, not the 3.4 MB of 25,600.
	if size > 64<<10 {
		t.Errorf("ListAgents answered %d bytes, want under 64 KiB", size)
	}

}
