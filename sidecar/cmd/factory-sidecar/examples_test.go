package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The deploy kit's example sidecar config loads through the real loader,
// which refuses unknown keys.
func TestExampleSidecarConfigLoads(t *testing.T) {
	cfg, err := loadSidecarConfig("../../../deploy/examples/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "workspace-01" || !cfg.GPU.Disabled || len(cfg.Agents) != 2 || len(cfg.Probes) != 3 || cfg.Spool.Path == "" {
		t.Errorf("example sidecar config read as %+v", cfg)
	}
}

// Both shipped sidecar configs turn the LiteLLM poller on through the real
// loader, pointed at the LiteLLM their probes check.
func TestShippedConfigsRunTheLiteLLMPoller(t *testing.T) {
	for _, path := range []string{"../../../deploy/sidecar.yaml", "../../../deploy/examples/sidecar.yaml"} {
		cfg, err := loadSidecarConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		lite := cfg.Spend.LiteLLM
		if lite.URL != "http://127.0.0.1:4000" || lite.Interval <= 0 {
			t.Errorf("%s: spend.litellm is %+v, want the proxy on :4000 with an interval", path, lite)
		}
		so := spendOptions{}.withConfig(cfg.Spend)
		if !so.enabled() || so.litellmURL != lite.URL || so.litellmInterval != lite.Interval {
			t.Errorf("%s: the poller's options from the file: %+v", path, so)
		}
	}
}

// Flags and the environment win over the file's spend.litellm; a bad URL
// or interval in the file fails the load naming the key.
func TestSpendConfigPrecedenceAndChecks(t *testing.T) {
	var c spendConfig
	c.LiteLLM.URL, c.LiteLLM.Interval = "http://127.0.0.1:4000", time.Minute
	got := spendOptions{litellmURL: "http://litellm.internal:4000", litellmInterval: 5 * time.Second}.withConfig(c)
	if got.litellmURL != "http://litellm.internal:4000" || got.litellmInterval != 5*time.Second {
		t.Errorf("flags lost to the file: %+v", got)
	}
	if got := (spendOptions{}).withConfig(spendConfig{}); got.enabled() {
		t.Errorf("no url anywhere, yet the poller is on: %+v", got)
	}
	dir := t.TempDir()
	for body, want := range map[string]string{
		"spend:\n  litellm:\n    url: 127.0.0.1:4000\n":                    "spend.litellm.url",
		"spend:\n  litellm:\n    url: http://x:4000\n    interval: -1s\n":  "spend.litellm.interval",
		"spend:\n  litellm:\n    url: http://x:4000\n    intervall: 30s\n": "intervall",
		"spend:\n  litelm:\n    url: http://x:4000\n":                      "litelm",
	} {
		path := filepath.Join(dir, "sidecar.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadSidecarConfig(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", body, err, want)
		}
	}
}
