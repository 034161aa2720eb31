package metrics

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// BackupSource reads where the scheduled backups stand.
type BackupSource func(ctx context.Context) (*BackupSnapshot, error)

// BackupSnapshot is the scheduled backups at one moment, as every replica
// reads them from the store.
type BackupSnapshot struct {
	// LastSuccess is when the last good (verified) backup was taken; zero
	// when none was, and then the timestamp is not exported.
	LastSuccess time.Time
	// Failures counts the attempts that did not verify, ever.
	Failures int64
	// Every is the backup interval.
	Every time.Duration
}

func (m *Metrics) registerBackups(meter metric.Meter, src BackupSource) error {
	last, err := meter.Float64ObservableGauge("factory.backup.last_success_timestamp", metric.WithUnit("s"),
		metric.WithDescription("When the last good (verified) backup was taken, in Unix seconds; absent when none was."))
	if err != nil {
		return err
	}
	failures, err := meter.Int64ObservableCounter("factory.backup.failures", metric.WithUnit("{backup}"),
		metric.WithDescription("Scheduled backups that failed or did not verify."))
	if err != nil {
		return err
	}
	interval, err := meter.Float64ObservableGauge("factory.backup.interval", metric.WithUnit("s"),
		metric.WithDescription("The interval between scheduled backups (--backup-every)."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("backups", func(ctx context.Context) error {
			snap, err := src(ctx)
			if err != nil {
				return err
			}
			if !snap.LastSuccess.IsZero() {
				o.ObserveFloat64(last, float64(snap.LastSuccess.UnixNano())/1e9)
			}
			o.ObserveInt64(failures, snap.Failures)
			o.ObserveFloat64(interval, snap.Every.Seconds())
			return nil
		})
	}, last, failures, interval)
	return err
}
