package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/server"
)

// backupFlags declares the backup and vacuum schedule's flags (runbook
// §7.1, §11.3).
func backupFlags(fs *flag.FlagSet, cfg *fileConfig) {
	fs.StringVar(&cfg.BackupDir, "backup-dir", cfg.BackupDir, "directory for scheduled backups, one directory each (default DATA_DIR/backups); with replicas, storage every replica reaches")
	fs.DurationVar(&cfg.BackupEvery, "backup-every", cfg.BackupEvery, "take, verify and record a backup at this interval (the runbook's is 6h); 0 turns scheduled backups off")
	fs.StringVar(&cfg.BackupKeep, "backup-keep", cfg.BackupKeep, "retention of scheduled backups: an age (720h or 30d), a count (120), or both (30d,120); the last good backup is always kept (default 30d)")
	fs.DurationVar(&cfg.VacuumEvery, "vacuum-every", cfg.VacuumEvery, "VACUUM and ANALYZE the store at this interval (the runbook's is monthly: 720h); 0 never (factory doctor --vacuum runs one)")
}

// backupConfig is the schedule for server.Config.
func (c fileConfig) backupConfig() (server.BackupConfig, error) {
	if c.BackupEvery < 0 || c.VacuumEvery < 0 {
		return server.BackupConfig{}, fmt.Errorf("--backup-every and --vacuum-every must not be negative")
	}
	keep, err := ops.ParseRetention(c.BackupKeep)
	if err != nil {
		return server.BackupConfig{}, fmt.Errorf("--backup-keep: %w", err)
	}
	dir := c.BackupDir
	if dir == "" {
		dir = filepath.Join(c.DataDir, "backups")
	}
	return server.BackupConfig{Dir: dir, Every: c.BackupEvery, Keep: keep, VacuumEvery: c.VacuumEvery}, nil
}
