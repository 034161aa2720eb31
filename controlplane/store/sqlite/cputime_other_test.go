//go:build !unix

package sqlite

import "time"

// processCPU is not measured here; the benchmarks' CPU metric reads 0.
func processCPU() time.Duration { return 0 }
