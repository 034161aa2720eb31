package store

import (
	"context"
	"time"
)

// TelemetryStore keeps the history of the fleet's telemetry readings. The
// latest reading of each host lives in memory (the fleet registry); the
// store keeps downsampled past readings for a retention window, so it is
// written at most once per host per sampling interval and pruned by age.
type TelemetryStore interface {
	// TelemetryAppend inserts samples, all in one transaction. A sample
	// without a Host or a Time is a FieldError.
	TelemetryAppend(ctx context.Context, params *TelemetryAppendParams) error

	// TelemetryList returns one host's samples oldest first, with Time >=
	// Since when set and Time < Until when set, at most Limit (0: all).
	TelemetryList(ctx context.Context, params *TelemetryListParams) ([]*TelemetrySample, error)

	// TelemetryPrune deletes every sample with Time < Before and returns how
	// many it deleted.
	TelemetryPrune(ctx context.Context, params *TelemetryPruneParams) (int, error)
}

// TelemetrySample is one stored reading of a host.
type TelemetrySample struct {
	// Host is the sidecar's host.
	Host string
	// Time is when the control plane received the reading.
	Time time.Time
	// JSON is the reading itself, as JSON: the store does not interpret it,
	// so the reading's shape can grow without a migration.
	JSON string
}

// TelemetryAppendParams are TelemetryAppend's arguments.
type TelemetryAppendParams struct {
	Samples []TelemetrySample
}

// TelemetryListParams are TelemetryList's arguments.
type TelemetryListParams struct {
	Host  string
	Since time.Time
	Until time.Time
	Limit int
}

// TelemetryPruneParams are TelemetryPrune's arguments.
type TelemetryPruneParams struct {
	Before time.Time
}

// CheckTelemetrySamples validates samples before a driver stores them.
func CheckTelemetrySamples(samples []TelemetrySample) error {
	for i, s := range samples {
		switch {
		case s.Host == "":
			return InvalidField("host", "sample %d has no host", i)
		case s.Time.IsZero():
			return InvalidField("time", "sample %d has no time", i)
		}
	}
	return nil
}
