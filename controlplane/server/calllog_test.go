package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestLogUnaryLogsWhatItsLevelLetsThrough(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/factory.v1.QueueService/ClaimTask"}
	for _, c := range []struct {
		name     string
		minLevel slog.Level
		err      error
		want     string // level logged, "" for none
	}{
		{"ok at info", slog.LevelInfo, nil, ""},
		{"ok at debug", slog.LevelDebug, nil, "DEBUG"},
		{"invalid argument", slog.LevelInfo, status.Error(codes.InvalidArgument, "agent: required"), "INFO"},
		{"internal", slog.LevelInfo, status.Error(codes.Internal, "disk"), "ERROR"},
		{"refused by policy at info", slog.LevelInfo, status.Error(codes.PermissionDenied, "no"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: c.minLevel}))
			_, err := logUnary(log)(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, c.err })
			if err != c.err {
				t.Fatalf("returned %v, want the handler's %v", err, c.err)
			}
			if c.want == "" {
				if buf.Len() > 0 {
					t.Fatalf("logged %s, want nothing", buf.String())
				}
				return
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line["level"] != c.want || line["msg"] != "finished call" || line["grpc.service"] != "factory.v1.QueueService" ||
				line["grpc.method"] != "ClaimTask" || line["grpc.code"] != status.Code(c.err).String() || line["grpc.time_ms"] == nil {
				t.Fatalf("logged %v", line)
			}
			if c.err != nil && !strings.Contains(line["grpc.error"].(string), status.Convert(c.err).Message()) {
				t.Fatalf("grpc.error = %v", line["grpc.error"])
			}
		})
	}
}
