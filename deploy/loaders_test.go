package deploy

import (
	"testing"

	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/budget"
)

// The files the compose file mounts into the control plane load through
// the control plane's own loaders (the example configs are checked in
// their commands' packages, whose loaders are not importable).
func TestMountedConfigsLoadThroughTheRealLoaders(t *testing.T) {
	if _, err := budget.LoadPrices("prices.yaml"); err != nil {
		t.Errorf("prices.yaml: %v", err)
	}
	if _, err := alert.LoadFile("alerts.yaml"); err != nil {
		t.Errorf("alerts.yaml: %v", err)
	}
}
