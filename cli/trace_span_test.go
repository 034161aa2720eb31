package cli_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// One CLI call must be one trace: the CLI's client span, the control
// plane's server span under it, and the store spans under that.
func TestOneCLICallIsOneTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	st, err := sqlite.Open(ctx, sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	q, err := queue.New(queue.Config{Store: store.WithTracing(st, tp, "sqlite"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// The token is made on the untraced store, outside the call's trace;
	// the server resolves it through the traced one, under its span.
	_, token, err := mustAccess(t, st, log).Create(ctx, access.CreateParams{Role: store.RoleOperator, Subject: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	srv, _ := server.NewGRPCServer(server.Services{Queue: q, Access: mustAccess(t, store.WithTracing(st, tp, "sqlite"), log)}, log, tp, stopping)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	var stdout, stderr bytes.Buffer
	cmd := cli.NewRootCommand(cli.Options{Stdout: &stdout, Stderr: &stderr, TracerProvider: tp})
	cmd.SetArgs([]string{"--addr", lis.Addr().String(), "--token", token, "task", "create", "--title", "traced"})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("task create: %v (stderr %q)", err, stderr.String())
	}
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	// The server's span ends once its stats handler hears the call end,
	// which can come after the client already has its answer: wait for
	// both ends of the call.
	spans := rec.Ended()
	createSpan := func(kind trace.SpanKind) bool {
		return slices.ContainsFunc(spans, func(s sdktrace.ReadOnlySpan) bool {
			return s.SpanKind() == kind && strings.HasSuffix(s.Name(), "QueueService/CreateTask")
		})
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); spans = rec.Ended() {
		if createSpan(trace.SpanKindClient) && createSpan(trace.SpanKindServer) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var client, srvSpan sdktrace.ReadOnlySpan
	var storeSpans []sdktrace.ReadOnlySpan
	traces := map[trace.TraceID]bool{}
	for _, s := range spans {
		traces[s.SpanContext().TraceID()] = true
		switch {
		case s.SpanKind() == trace.SpanKindClient && strings.HasSuffix(s.Name(), "QueueService/CreateTask"):
			client = s
		case s.SpanKind() == trace.SpanKindServer && strings.HasSuffix(s.Name(), "QueueService/CreateTask"):
			srvSpan = s
		case strings.HasPrefix(s.Name(), "store."):
			storeSpans = append(storeSpans, s)
		}
	}
	if client == nil || srvSpan == nil || len(storeSpans) == 0 {
		names := []string{}
		for _, s := range spans {
			names = append(names, s.Name())
		}
		t.Fatalf("want a client, a server and store spans; got %q", names)
	}
	if len(traces) != 1 {
		t.Fatalf("one CLI call made %d traces", len(traces))
	}
	if srvSpan.Parent().SpanID() != client.SpanContext().SpanID() {
		t.Errorf("server span's parent is %s, want the client span %s", srvSpan.Parent().SpanID(), client.SpanContext().SpanID())
	}
	for _, s := range storeSpans {
		if s.Parent().SpanID() != srvSpan.SpanContext().SpanID() {
			t.Errorf("store span %s is not under the server span", s.Name())
		}
	}
}
