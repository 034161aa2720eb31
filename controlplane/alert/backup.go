package alert

import (
	"context"
	"time"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
)

// BackupSource reads where the scheduled backups stand.
type BackupSource interface {
	// BackupAge returns the last good backup's age (with none, the time
	// since the first attempt) at now and the backup interval; ok is false
	// when no backups are scheduled or none was attempted yet.
	BackupAge(ctx context.Context, now time.Time) (age, every time.Duration, ok bool, err error)
}

// backupAge measures ExprBackupAge: the age in intervals, so one default
// threshold (2) serves any schedule.
func (m *measurer) backupAge(ctx context.Context) ([]series, error) {
	if m.src.Backup == nil {
		return nil, errNoSource
	}
	age, every, ok, err := m.src.Backup.BackupAge(ctx, m.now)
	if err != nil || !ok || every <= 0 {
		return nil, err
	}
	return one(float64(age) / float64(every)), nil
}

// StoreBackups reads the scheduled backups' runs from the store, where
// every replica sees them; every is the schedule's interval (0: none).
func StoreBackups(st store.BackupStore, every time.Duration) BackupSource {
	return storeBackups{st: st, every: every}
}

type storeBackups struct {
	st    store.BackupStore
	every time.Duration
}

func (s storeBackups) BackupAge(ctx context.Context, now time.Time) (time.Duration, time.Duration, bool, error) {
	if s.every <= 0 {
		return 0, 0, false, nil
	}
	sum, err := s.st.BackupSummary(ctx)
	if err != nil {
		return 0, 0, false, err
	}
	age, ok := ops.BackupAge(sum, now)
	return age, s.every, ok, nil
}
