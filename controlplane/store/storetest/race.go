//go:build race

package storetest

// The race detector slows an embedded database's every memory access, so
// the load tests shrink under it; their contention does not.
func init() { raceEnabled = true }
