package main

import (
	"testing"
)

func TestMetricsListenDefaultsOnAndTurnsOff(t *testing.T) {
	none := func(string) string { return "" }
	cfg, err := loadConfig(nil, none)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.metricsListen(); got != "127.0.0.1:9464" {
		t.Errorf("default metrics address %q, want 127.0.0.1:9464", got)
	}
	for _, args := range [][]string{{"--metrics-listen", "off"}, {"--metrics-listen", "OFF"}, {"--metrics-listen="}} {
		cfg, err := loadConfig(args, none)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.metricsListen(); got != "" {
			t.Errorf("%v: metrics address %q, want off", args, got)
		}
	}
	env := map[string]string{"FACTORY_METRICS_LISTEN": "0.0.0.0:9999"}
	cfg, err = loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.metricsListen(); got != "0.0.0.0:9999" {
		t.Errorf("FACTORY_METRICS_LISTEN: metrics address %q", got)
	}
}

// The deploy kit's example config loads through the real loader, which
// refuses unknown keys: a key renamed here breaks the example, not a
// production start.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := loadConfig([]string{"--config", "../../../deploy/examples/controlplane.yaml"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/factory" || cfg.metricsListen() != "127.0.0.1:9464" || cfg.Listen != "127.0.0.1:7420" {
		t.Errorf("example config read as %+v", cfg)
	}
}
