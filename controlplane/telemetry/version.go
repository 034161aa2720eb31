package telemetry

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// linkedVersion, when set at link time with
// -ldflags "-X github.com/factory/factory/controlplane/telemetry.linkedVersion=v1.4.0",
// wins over the build info: a build from a source tree without its .git
// directory (a container image's) has no stamp to read.
var linkedVersion string

// devVersion is the version of a build that carries no stamp at all (a
// test binary, a build with -buildvcs=false).
const devVersion = "dev"

// Build says how this binary was built, as the `version` commands print it.
type Build struct {
	// Version is what Version returns.
	Version string `json:"version"`
	// GoVersion is the toolchain that built the binary (go1.26.8).
	GoVersion string `json:"go_version,omitempty"`
	// Revision is the commit the binary was built from, Time that commit's
	// time (RFC 3339), and Modified whether the work tree had uncommitted
	// changes: the go command's VCS stamp, empty without one.
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
}

// Details is the build in one parenthesis-friendly phrase:
// "go1.26.8, commit b851fd0ad9d1 of 2026-12-06T22:27:47Z, modified".
func (b Build) Details() string {
	parts := []string{}
	if b.GoVersion != "" {
		parts = append(parts, b.GoVersion)
	}
	if b.Revision != "" {
		commit := "commit " + shortRevision(b.Revision)
		if b.Time != "" {
			commit += " of " + b.Time
		}
		parts = append(parts, commit)
	}
	if b.Modified {
		parts = append(parts, "modified")
	}
	return strings.Join(parts, ", ")
}

// String is the version followed by its details, as `NAME version` prints it.
func (b Build) String() string {
	if d := b.Details(); d != "" {
		return fmt.Sprintf("%s (%s)", b.Version, d)
	}
	return b.Version
}

// ownBuild is read once: the build info cannot change while the process runs.
var ownBuild = sync.OnceValue(func() Build {
	bi, _ := debug.ReadBuildInfo()
	b := BuildOf(bi)
	if linkedVersion != "" {
		b.Version = linkedVersion
	}
	return b
})

// Version is this binary's version: the main module's version as the go
// command stamped it (a release tag, or since Go 1.24 a pseudo-version
// naming the commit, "+dirty" when the tree had changes); else one made
// from the VCS stamp the same way; else "dev". It is what `--version`
// prints, what the control plane logs and returns from WhoAmI, what a
// sidecar sends in its Hello and what traces carry as service.version.
func Version() string { return ownBuild().Version }

// VersionInfo is this binary's version with the build details behind it.
func VersionInfo() Build { return ownBuild() }

// VersionOf is the version a binary with build info bi reports (nil: none
// could be read). Tests read a built binary's info with
// debug/buildinfo.ReadFile and compare what the binary prints with this.
func VersionOf(bi *debug.BuildInfo) string { return BuildOf(bi).Version }

// BuildOf is the Build a binary with build info bi reports.
func BuildOf(bi *debug.BuildInfo) Build {
	if bi == nil {
		return Build{Version: devVersion}
	}
	b := Build{GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	switch v := bi.Main.Version; {
	case v != "" && v != "(devel)":
		b.Version = v
	case b.Revision != "":
		b.Version = pseudoVersion(b)
	default:
		b.Version = devVersion
	}
	return b
}

// pseudoVersion spells a VCS stamp the way the go command spells the
// version of an untagged commit (v0.0.0-20261206222747-b851fd0ad9d1), so a
// binary reads the same whichever of the two its version came from.
func pseudoVersion(b Build) string {
	v := shortRevision(b.Revision)
	if t, err := time.Parse(time.RFC3339, b.Time); err == nil {
		v = "v0.0.0-" + t.UTC().Format("20060102150405") + "-" + v
	}
	if b.Modified {
		v += "+dirty"
	}
	return v
}

// shortRevision is a commit hash cut to the 12 characters Go's
// pseudo-versions use.
func shortRevision(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
