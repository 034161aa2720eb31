package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/digest"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// exportChunk is about how much of a dump one ExportState message
// carries: big enough that per-message costs vanish, far below the
// response size limit.
const exportChunk = 1 << 20

// opsServer adapts the ops domain to OpsService.
type opsServer struct {
	factoryv1.UnimplementedOpsServiceServer
	ops *ops.Service
	log *slog.Logger
	// maint, digest and fleet serve maintenance mode, the digest and the
	// doctor's clock-skew check; nil answers UNIMPLEMENTED (or skips).
	maint  *maintenance.Service
	digest *digest.Service
	fleet  *fleet.Registry
	// alerts serves the alert RPCs and events WatchEvents; nil answers
	// UNIMPLEMENTED. stopping ends watches at shutdown.
	alerts   *alert.Service
	events   *notify.Hub
	stopping <-chan struct{}
	// backup is the schedule GetBackupStatus judges staleness by.
	backup BackupConfig
}

func (s *opsServer) available() error {
	if s.ops == nil {
		return status.Error(codes.Unimplemented, "this server was built without the ops service")
	}
	return nil
}

// ExportState implements factoryv1.OpsServiceServer.
func (s *opsServer) ExportState(_ *factoryv1.ExportStateRequest, stream grpc.ServerStreamingServer[factoryv1.ExportStateResponse]) error {
	if err := s.available(); err != nil {
		return err
	}
	ctx := stream.Context()
	w := &lineChunker{send: func(lines []byte) error {
		return stream.Send(&factoryv1.ExportStateResponse{Lines: string(lines)})
	}}
	n, err := s.ops.Export(ctx, w)
	if err == nil {
		err = w.err
	}
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	// The rest of the lines and the counts travel together, so the
	// client knows the dump is whole.
	last := &factoryv1.ExportStateResponse{Lines: w.buf.String(), Counts: countsProto(n)}
	if err := stream.Send(last); err != nil {
		return toStatus(ctx, s.log, err)
	}
	return nil
}

// lineChunker collects a dump and sends it in messages of whole lines.
type lineChunker struct {
	buf  bytes.Buffer
	send func(lines []byte) error
	err  error
}

func (c *lineChunker) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.buf.Write(p)
	if c.buf.Len() < exportChunk {
		return len(p), nil
	}
	b := c.buf.Bytes()
	cut := bytes.LastIndexByte(b, '\n') + 1
	if cut == 0 {
		// One line longer than a chunk: wait for its end.
		return len(p), nil
	}
	if c.err = c.send(b[:cut]); c.err != nil {
		return 0, c.err
	}
	c.buf.Next(cut)
	return len(p), nil
}

// ImportState implements factoryv1.OpsServiceServer. The upload is spooled
// to a temporary file before the load starts, so the store's transaction
// never waits on the network (on SQLite it holds the one writer), and the
// load can read the dump twice (check, then store).
func (s *opsServer) ImportState(stream grpc.ClientStreamingServer[factoryv1.ImportStateRequest, factoryv1.ImportStateResponse]) error {
	if err := s.available(); err != nil {
		return err
	}
	ctx := stream.Context()
	spool, err := os.CreateTemp("", "factory-import-*.jsonl")
	if err != nil {
		return toStatus(ctx, s.log, fmt.Errorf("spool the upload: %w", err))
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	merge, first := false, true
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if first {
			merge, first = req.GetMerge(), false
		}
		if _, err := spool.WriteString(req.GetLines()); err != nil {
			return toStatus(ctx, s.log, fmt.Errorf("spool the upload: %w", err))
		}
	}
	if first {
		return status.Error(codes.InvalidArgument, "lines: no dump was sent")
	}
	n, err := s.ops.Import(ctx, spool, merge)
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	access.Note(ctx, "state", nil, importNote{Merge: merge, Queue: n.Queue, Tasks: n.Tasks, Tokens: n.Tokens, Audit: n.Audit, FleetEvents: n.FleetEvents, Rows: n.Rows})
	return stream.SendAndClose(&factoryv1.ImportStateResponse{Loaded: countsProto(*n)})
}

// importNote is what the audit log records of an import.
type importNote struct {
	Merge  bool  `json:"merge"`
	Queue  int64 `json:"queue"`
	Tasks  int64 `json:"tasks"`
	Tokens int64 `json:"tokens"`
	Audit  int64 `json:"audit_entries"`
	// FleetEvents counts only the events the store did not hold already.
	FleetEvents int64 `json:"fleet_events"`
	// Rows counts the other tables' rows stored.
	Rows int64 `json:"rows"`
}

func countsProto(n store.DumpCounts) *factoryv1.DumpCounts {
	return &factoryv1.DumpCounts{Queue: n.Queue, Tasks: n.Tasks, Tokens: n.Tokens, AuditEntries: n.Audit, FleetEvents: n.FleetEvents, Rows: n.Rows}
}
