package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/ops"
)

func TestBackupSettingsFromFileEnvAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(file, []byte("data_dir: /srv/factory\nbackup_every: 6h\nbackup_keep: 30d,120\nvacuum_every: 720h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FACTORY_CONFIG": file}
	cfg, err := loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	b, err := cfg.backupConfig()
	if err != nil {
		t.Fatal(err)
	}
	if b.Dir != filepath.Join("/srv/factory", "backups") || b.Every != 6*time.Hour || b.VacuumEvery != 720*time.Hour ||
		b.Keep != (ops.Retention{MaxAge: 720 * time.Hour, Count: 120}) {
		t.Errorf("from the file: %+v", b)
	}
	env["FACTORY_BACKUP_KEEP"] = "48h"
	cfg, err = loadConfig([]string{"--backup-dir", "/mnt/backups"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if b, err = cfg.backupConfig(); err != nil || b.Dir != "/mnt/backups" || b.Keep != (ops.Retention{MaxAge: 48 * time.Hour}) {
		t.Errorf("env and flag over the file: %+v %v", b, err)
	}
	// Off by default; a bad retention names the flag.
	cfg, _ = loadConfig(nil, func(string) string { return "" })
	if b, err = cfg.backupConfig(); err != nil || b.Every != 0 || b.VacuumEvery != 0 {
		t.Errorf("defaults: %+v %v", b, err)
	}
	cfg.BackupKeep = "forever"
	if _, err := cfg.backupConfig(); err == nil || !strings.Contains(err.Error(), "--backup-keep") {
		t.Errorf("backup-keep forever: %v", err)
	}
}
