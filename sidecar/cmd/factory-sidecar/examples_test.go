package main

import "testing"

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
