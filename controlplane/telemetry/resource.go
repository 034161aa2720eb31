package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Resource describes this process to traces and metrics: the SDK's
// defaults, then the binary's own name and version, then whatever the
// standard environment says (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES),
// which wins: an operator who names the service gets that name.
func Resource(ctx context.Context, service string) (*resource.Resource, error) {
	ours := resource.NewSchemaless(semconv.ServiceName(service), semconv.ServiceVersion(Version()))
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), ours)
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, err
	}
	// A schema URL conflict still returns the merged resource.
	res, err = resource.Merge(res, env)
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, err
	}
	return res, nil
}
