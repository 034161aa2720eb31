// Package disk reports the filesystems behind configured paths (statfs), the
// runbook's "disk" health check: a full model or log volume stops a host.
package disk

import (
	"golang.org/x/sys/unix"

	"github.com/factory/factory/controlplane/fleet"
)

// Usage is one path's filesystem.
type Usage struct {
	Path string `json:"path"`
	// TotalBytes is the filesystem size; FreeBytes what root could still
	// write; AvailableBytes what an unprivileged agent can (the number that
	// matters: reserved blocks are not theirs).
	TotalBytes     uint64  `json:"total_bytes"`
	FreeBytes      uint64  `json:"free_bytes"`
	AvailableBytes uint64  `json:"available_bytes"`
	UsedBytes      uint64  `json:"used_bytes"`
	UsedPercent    float64 `json:"used_percent"`
	InodesTotal    uint64  `json:"inodes_total"`
	InodesFree     uint64  `json:"inodes_free"`
	// Error is set when statfs failed (missing path, no permission); the
	// numbers are then zero.
	Error string `json:"error,omitempty"`
}

// Collect statfs-es every path. A failing path reports its error and does
// not hide the others.
func Collect(paths []string) []Usage {
	out := make([]Usage, 0, len(paths))
	for _, p := range paths {
		out = append(out, stat(p))
	}
	return out
}

func stat(path string) Usage {
	u := Usage{Path: path}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		u.Error = err.Error()
		return u
	}
	bs := uint64(st.Bsize)
	u.TotalBytes = uint64(st.Blocks) * bs
	u.FreeBytes = uint64(st.Bfree) * bs
	u.AvailableBytes = uint64(st.Bavail) * bs
	u.UsedBytes = u.TotalBytes - u.FreeBytes
	// df's definition, the one the control plane judges by.
	u.UsedPercent = fleet.DiskUsedRatio(u.UsedBytes, u.AvailableBytes) * 100
	u.InodesTotal = uint64(st.Files)
	u.InodesFree = uint64(st.Ffree)
	return u
}
