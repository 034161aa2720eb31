package server

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/metrics"
	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// BackupConfig schedules backups and vacuums (runbook §7.1, §11.3); its
// zero value schedules neither.
type BackupConfig struct {
	// Dir holds the scheduled backups, one directory each; with replicas
	// it should be storage every replica reaches.
	Dir string
	// Every is the interval between backups; 0 turns the schedule off.
	Every time.Duration
	// Keep is the retention (zero: ops.DefaultRetention, 30 days).
	Keep ops.Retention
	// VacuumEvery vacuums the store at this interval; 0 never.
	VacuumEvery time.Duration
	// After waits for the schedules (time.After when nil): tests pass a
	// fake clock's. OnRun hears of every recorded backup run.
	After func(time.Duration) <-chan time.Time
	OnRun func(*store.BackupRun)
}

// newBackupScheduler checks the schedule before anything is served; nil
// when backups are off.
func newBackupScheduler(cfg BackupConfig, o *ops.Service, clock queue.Clock, log *slog.Logger) (*ops.Scheduler, error) {
	if cfg.Every <= 0 {
		return nil, nil
	}
	scfg := ops.ScheduleConfig{Dir: cfg.Dir, Every: cfg.Every, Keep: cfg.Keep, After: cfg.After, OnRun: cfg.OnRun, Logger: log}
	if clock != nil {
		scfg.Clock = clock
	}
	return o.NewScheduler(scfg)
}

// runBackups runs the backup and vacuum schedules, on the elected replica
// alone when replicas share a database: one backup serves them all.
func runBackups(ctx context.Context, g *errgroup.Group, cfg BackupConfig, raw store.Store, sched *ops.Scheduler, o *ops.Service) {
	var duties []struct {
		name string
		fn   func(context.Context) error
	}
	if sched != nil {
		duties = append(duties, struct {
			name string
			fn   func(context.Context) error
		}{"backup", sched.Run})
	}
	if cfg.VacuumEvery > 0 {
		duties = append(duties, struct {
			name string
			fn   func(context.Context) error
		}{"vacuum", func(ctx context.Context) error { return o.RunVacuum(ctx, cfg.VacuumEvery, cfg.After) }})
	}
	for _, d := range duties {
		if el, ok := raw.(store.Elector); ok {
			g.Go(func() error { return el.RunElected(ctx, d.name, d.fn) })
			continue
		}
		g.Go(func() error { return d.fn(ctx) })
	}
}

// backupAlerts is the backup_stale rule's source.
func backupAlerts(cfg BackupConfig, st store.BackupStore) alert.BackupSource {
	return alert.StoreBackups(st, cfg.Every)
}

// registerBackupMetrics exports the backups' gauges when a schedule is
// configured (every replica reads them from the store).
func registerBackupMetrics(met *metrics.Metrics, cfg BackupConfig, o *ops.Service, now func() time.Time) error {
	if met == nil || cfg.Every <= 0 {
		return nil
	}
	return met.Register(metrics.Sources{Backups: func(ctx context.Context) (*metrics.BackupSnapshot, error) {
		st, err := o.BackupStatusAt(ctx, now(), cfg.Every)
		if err != nil {
			return nil, err
		}
		snap := &metrics.BackupSnapshot{Failures: st.Failures, Every: cfg.Every}
		if st.LastGood != nil {
			snap.LastSuccess = st.LastGood.StartedAt
		}
		return snap, nil
	}})
}

// GetBackupStatus implements factoryv1.OpsServiceServer.
func (s *opsServer) GetBackupStatus(ctx context.Context, _ *factoryv1.GetBackupStatusRequest) (*factoryv1.GetBackupStatusResponse, error) {
	if err := s.available(); err != nil {
		return nil, err
	}
	st, err := s.ops.BackupStatusAt(ctx, s.now(), s.backup.Every)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	out := &factoryv1.GetBackupStatusResponse{LastGood: backupRunProto(st.LastGood), Last: backupRunProto(st.Last),
		Age: durationpb.New(st.Age), Stale: st.Stale, Failures: st.Failures}
	if s.backup.Every > 0 {
		keep := s.backup.Keep
		if keep == (ops.Retention{}) {
			keep = ops.DefaultRetention
		}
		out.Every, out.Keep, out.Dir = durationpb.New(s.backup.Every), keep.String(), s.backup.Dir
	}
	return out, nil
}

func backupRunProto(r *store.BackupRun) *factoryv1.BackupRun {
	if r == nil {
		return nil
	}
	out := &factoryv1.BackupRun{Id: r.ID, StartedAt: timestamppb.New(r.StartedAt), Path: r.Path, Bytes: r.Bytes, Verified: r.Verified, Error: r.Error}
	if !r.FinishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(r.FinishedAt)
	}
	if !r.RemovedAt.IsZero() {
		out.RemovedAt = timestamppb.New(r.RemovedAt)
	}
	return out
}
