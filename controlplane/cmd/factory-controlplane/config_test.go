package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/queue"
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

func TestConfigSecurityAndLimits(t *testing.T) {
	cfg, err := loadConfig(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RateLimit != 2000 || cfg.RateBurst != 4000 || cfg.Insecure || cfg.TLSCert != "" {
		t.Fatalf("defaults: %+v", cfg)
	}

	file := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(file, []byte("tls_cert: /etc/factory/cp.pem\ntls_key: /etc/factory/cp-key.pem\nrate_limit: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FACTORY_CONFIG": file, "FACTORY_TLS_CLIENT_CA": "/etc/factory/sidecars.pem", "FACTORY_RATE_BURST": "75"}
	cfg, err = loadConfig([]string{"--insecure"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	tls := cfg.serverTLS()
	if tls.CertFile != "/etc/factory/cp.pem" || tls.KeyFile != "/etc/factory/cp-key.pem" || tls.ClientCAFile != "/etc/factory/sidecars.pem" {
		t.Errorf("TLS from file and env: %+v", tls)
	}
	if !cfg.Insecure {
		t.Error("--insecure not applied")
	}
	if rl := cfg.rateLimit(); rl.PerSecond != 50 || rl.Burst != 75 {
		t.Errorf("rate limit from file and env: %+v", rl)
	}

	// 0 turns the limit off.
	cfg, err = loadConfig([]string{"--rate-limit", "0"}, func(string) string { return "" })
	if err != nil || cfg.RateLimit != 0 {
		t.Fatalf("--rate-limit 0: %v, %v", cfg.RateLimit, err)
	}
}

// The minimum approval timeout defaults to five minutes (a person needs
// time to answer) and can be lowered from the file, the environment or a
// flag, as tests of expiry do.
func TestConfigApprovalMinTimeout(t *testing.T) {
	cfg, err := loadConfig(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ApprovalMinTimeout != 5*time.Minute {
		t.Fatalf("default approval minimum timeout %s, want 5m", cfg.ApprovalMinTimeout)
	}
	file := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(file, []byte("approval_min_timeout: 2m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = loadConfig([]string{"--config", file}, func(string) string { return "" }); err != nil || cfg.ApprovalMinTimeout != 2*time.Minute {
		t.Fatalf("from the file: %s, %v", cfg.ApprovalMinTimeout, err)
	}
	env := map[string]string{"FACTORY_APPROVAL_MIN_TIMEOUT": "30s"}
	if cfg, err = loadConfig(nil, func(k string) string { return env[k] }); err != nil || cfg.ApprovalMinTimeout != 30*time.Second {
		t.Fatalf("from the environment: %s, %v", cfg.ApprovalMinTimeout, err)
	}
	if cfg, err = loadConfig([]string{"--approval-min-timeout", "2s"}, func(k string) string { return env[k] }); err != nil || cfg.ApprovalMinTimeout != 2*time.Second {
		t.Fatalf("from the flag: %s, %v", cfg.ApprovalMinTimeout, err)
	}
}

// TestConsoleListenAuto: "auto" stays on loopback, two ports after the
// gRPC port (the port between is the sidecar's spend endpoint), whatever
// --listen binds.
func TestConsoleListenAuto(t *testing.T) {
	for _, c := range []struct{ listen, console, want string }{
		{"127.0.0.1:7420", "auto", "127.0.0.1:7422"},
		{"127.0.0.1:7420", "", "127.0.0.1:7422"},
		{"0.0.0.0:7420", "auto", "127.0.0.1:7422"},
		{"[::1]:7430", "auto", "[::1]:7432"},
		{"127.0.0.1:0", "auto", "127.0.0.1:0"},
		{"127.0.0.1:7420", "off", ""},
		{"127.0.0.1:7420", "10.0.0.5:8443", "10.0.0.5:8443"},
	} {
		cfg := defaultConfig()
		cfg.Listen, cfg.ConsoleListen = c.listen, c.console
		got, err := cfg.consoleListen()
		if err != nil || got != c.want {
			t.Errorf("listen %s, console %q: got %q, %v; want %q", c.listen, c.console, got, err, c.want)
		}
	}
}

// The lease cap defaults to the queue's and is set from the file, the
// environment or --max-leases-per-agent, reaching the queue's config.
func TestConfigMaxLeasesPerAgent(t *testing.T) {
	cfg, err := loadConfig(nil, func(string) string { return "" })
	if err != nil || cfg.queueConfig().MaxLeasesPerAgent != queue.DefaultMaxLeasesPerAgent {
		t.Fatalf("default: %d, %v", cfg.MaxLeasesPerAgent, err)
	}
	file := filepath.Join(t.TempDir(), "cp.yaml")
	if err := os.WriteFile(file, []byte("max_leases_per_agent: 40\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FACTORY_CONFIG": file}
	if cfg, err = loadConfig(nil, func(k string) string { return env[k] }); err != nil || cfg.queueConfig().MaxLeasesPerAgent != 40 {
		t.Fatalf("from the file: %d, %v", cfg.MaxLeasesPerAgent, err)
	}
	env["FACTORY_MAX_LEASES_PER_AGENT"] = "30"
	if cfg, err = loadConfig(nil, func(k string) string { return env[k] }); err != nil || cfg.queueConfig().MaxLeasesPerAgent != 30 {
		t.Fatalf("env over file: %d, %v", cfg.MaxLeasesPerAgent, err)
	}
	if cfg, err = loadConfig([]string{"--max-leases-per-agent", "20"}, func(k string) string { return env[k] }); err != nil || cfg.queueConfig().MaxLeasesPerAgent != 20 {
		t.Fatalf("flag over env: %d, %v", cfg.MaxLeasesPerAgent, err)
	}
}
