package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/ops"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// backupChunk is how many bytes of the database file or of the dump one
// Backup message carries.
const backupChunk = 1 << 20

// Backup implements factoryv1.OpsServiceServer. The snapshot is spooled
// on the server's disk first, so no store snapshot stays open while the
// client reads slowly.
func (s *opsServer) Backup(_ *factoryv1.BackupRequest, stream grpc.ServerStreamingServer[factoryv1.BackupResponse]) error {
	if err := s.available(); err != nil {
		return err
	}
	ctx := stream.Context()
	snap, err := s.ops.Backup(ctx, s.now().UTC())
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	defer snap.Close()
	header := &factoryv1.BackupHeader{Driver: snap.Driver, MigrationVersion: snap.MigrationVersion,
		CreatedAt: timestamppb.New(snap.CreatedAt), HasDatabase: snap.Database != ""}
	if err := stream.Send(&factoryv1.BackupResponse{Header: header}); err != nil {
		return err
	}
	if snap.Database != "" {
		if err := sendFile(snap.Database, func(b []byte) error {
			return stream.Send(&factoryv1.BackupResponse{Database: b})
		}); err != nil {
			return toStatus(ctx, s.log, err)
		}
	}
	f, err := os.Open(snap.Dump)
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	defer f.Close()
	w := &lineChunker{send: func(lines []byte) error {
		return stream.Send(&factoryv1.BackupResponse{DumpLines: string(lines)})
	}}
	if _, err := io.Copy(w, bufio.NewReaderSize(f, backupChunk)); err != nil {
		return toStatus(ctx, s.log, err)
	}
	if w.err != nil {
		return toStatus(ctx, s.log, w.err)
	}
	return stream.Send(&factoryv1.BackupResponse{DumpLines: w.buf.String(), Counts: countsProto(snap.Counts)})
}

// sendFile sends the file at path in chunks.
func sendFile(path string, send func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, backupChunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if serr := send(bytes.Clone(buf[:n])); serr != nil {
				return serr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// now is the control plane's clock (the queue's, which tests move), by
// way of maintenance mode; the wall clock on a server built without it.
func (s *opsServer) now() time.Time {
	if s.maint != nil {
		return s.maint.Now()
	}
	return time.Now()
}

// Clock skew thresholds: a sidecar's readings arrive a collection and a
// network hop after they are stamped, so a few seconds are normal.
const (
	skewWarn = 5 * time.Second
	skewFail = time.Minute
)

// Doctor implements factoryv1.OpsServiceServer.
func (s *opsServer) Doctor(ctx context.Context, req *factoryv1.DoctorRequest) (*factoryv1.DoctorResponse, error) {
	if err := s.available(); err != nil {
		return nil, err
	}
	checks := s.ops.Doctor(ctx, s.now())
	if s.fleet != nil {
		checks = append(checks, clockSkew(s.fleet.Nodes()))
	}
	if req.GetVacuum() {
		checks = append(checks, s.ops.Vacuum(ctx))
	}
	out := &factoryv1.DoctorResponse{}
	for _, c := range checks {
		out.Checks = append(out.Checks, &factoryv1.DoctorCheck{Name: c.Name, Status: doctorStatus(c.Verdict), Detail: c.Detail})
	}
	return out, nil
}

// clockSkew compares each connected sidecar's clock, as stamped on its
// latest telemetry, with the time the server received it.
func clockSkew(nodes []fleet.Node) ops.Check {
	type skew struct {
		host string
		d    time.Duration
	}
	var skews []skew
	for _, n := range nodes {
		t, ok := n.Telemetry.(*factoryv1.Telemetry)
		if !ok || !n.Connected || t.GetCollectedAt() == nil || n.TelemetryAt.IsZero() {
			continue
		}
		skews = append(skews, skew{n.Host, n.TelemetryAt.Sub(t.GetCollectedAt().AsTime())})
	}
	if len(skews) == 0 {
		return ops.Check{Name: "clock_skew", Verdict: ops.OK, Detail: "no connected sidecar has sent telemetry"}
	}
	abs := func(d time.Duration) time.Duration { return max(d, -d) }
	worst := slices.MaxFunc(skews, func(a, b skew) int { return int(abs(a.d) - abs(b.d)) })
	detail := fmt.Sprintf("%d sidecar(s); largest skew %s on %s (server time minus the sidecar's)", len(skews), worst.d.Round(time.Millisecond), worst.host)
	switch {
	case abs(worst.d) >= skewFail:
		return ops.Check{Name: "clock_skew", Verdict: ops.Fail, Detail: detail + "; check NTP on that host"}
	case abs(worst.d) >= skewWarn:
		return ops.Check{Name: "clock_skew", Verdict: ops.Warn, Detail: detail}
	}
	return ops.Check{Name: "clock_skew", Verdict: ops.OK, Detail: detail}
}

func doctorStatus(v ops.Verdict) factoryv1.DoctorStatus {
	switch v {
	case ops.OK:
		return factoryv1.DoctorStatus_DOCTOR_STATUS_OK
	case ops.Warn:
		return factoryv1.DoctorStatus_DOCTOR_STATUS_WARN
	case ops.Fail:
		return factoryv1.DoctorStatus_DOCTOR_STATUS_FAIL
	}
	return factoryv1.DoctorStatus_DOCTOR_STATUS_UNSPECIFIED
}
