package fleet

// DiskUsedRatio is a filesystem's usage as df reports it: used / (used +
// available), 0..1. The blocks reserved for root (5% on ext4 by default)
// are neither, so a disk an agent can no longer write to reads 1, and the
// 85% health line and alert trip where df says 85%. This is the one
// definition: the sidecar, the health check, the alert, the metric, the
// digest, the history and the console all use it. 0 when both are 0.
func DiskUsedRatio(used, available uint64) float64 {
	d := float64(used) + float64(available)
	if d == 0 {
		return 0
	}
	return float64(used) / d
}
