package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

func resourceValue(t *testing.T, key string) string {
	t.Helper()
	res, err := Resource(context.Background(), "factory-controlplane")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := res.Set().Value(attribute.Key(key))
	return v.Emit()
}

// TestResourceLetsTheEnvironmentWin: OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override the binary's own name; without them
// the binary's name and version stand.
func TestResourceLetsTheEnvironmentWin(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	if got := resourceValue(t, "service.name"); got != "factory-controlplane" {
		t.Errorf("service.name %q without the environment, want factory-controlplane", got)
	}
	if got := resourceValue(t, "service.version"); got != Version() {
		t.Errorf("service.version %q, want %q", got, Version())
	}
	t.Setenv("OTEL_SERVICE_NAME", "cp-eu-1")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.namespace=factory")
	if got := resourceValue(t, "service.name"); got != "cp-eu-1" {
		t.Errorf("service.name %q with OTEL_SERVICE_NAME=cp-eu-1", got)
	}
	if got := resourceValue(t, "deployment.environment"); got != "prod" {
		t.Errorf("deployment.environment %q from OTEL_RESOURCE_ATTRIBUTES, want prod", got)
	}
}
