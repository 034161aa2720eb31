package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestConfigPrecedenceFileEnvFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:1111\ndata_dir: /from/file\ndefault_lease: 2m\nretry_max: 5m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FACTORY_CONFIG": file, "FACTORY_DATA_DIR": "/from/env", "FACTORY_DEFAULT_LEASE": "3m"}
	cfg, err := loadConfig([]string{"--default-lease", "4m"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1111" {
		t.Errorf("listen from file: got %q", cfg.Listen)
	}
	if cfg.DataDir != "/from/env" {
		t.Errorf("env over file: got %q", cfg.DataDir)
	}
	if cfg.DefaultLease != 4*time.Minute {
		t.Errorf("flag over env: got %s", cfg.DefaultLease)
	}
	if cfg.RetryMax != 5*time.Minute || cfg.RetryBase != 10*time.Second {
		t.Errorf("file and default: got %s, %s", cfg.RetryMax, cfg.RetryBase)
	}
}

func TestConfigRejectsBadValuesNamingTheSetting(t *testing.T) {
	env := map[string]string{"FACTORY_DEFAULT_LEASE": "soon"}
	if _, err := loadConfig(nil, func(k string) string { return env[k] }); err == nil {
		t.Fatal("accepted FACTORY_DEFAULT_LEASE=soon")
	}
	file := filepath.Join(t.TempDir(), "cp.yaml")
	os.WriteFile(file, []byte("lisen: typo\n"), 0o600)
	if _, err := loadConfig([]string{"--config", file}, func(string) string { return "" }); err == nil {
		t.Fatal("accepted an unknown key in the config file")
	}
}
