// Package versiontest builds the factory's binaries the way a release
// does, for the tests that check the version they print and send.
package versiontest

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/telemetry"
)

// Build builds pkg (an import path, or "." for the test's own directory)
// into a temporary file with the VCS stamp a release build carries (the
// environment may say -buildvcs=false; the command line wins), cgo on or
// off, and returns its path, its build info and the version that build
// info stands for. A checkout git refuses to read (another owner) cannot
// be stamped: the binary is then built without the stamp and its version
// is "dev", which the caller still checks. When the build is stamped, the
// version must name the commit.
func Build(t testing.TB, pkg, name string, cgo bool) (bin string, bi *buildinfo.BuildInfo, version string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), name)
	cgoEnv := "CGO_ENABLED=0"
	if cgo {
		cgoEnv = "CGO_ENABLED=1"
	}
	build := func(vcs string) ([]byte, error) {
		cmd := exec.Command("go", "build", "-buildvcs="+vcs, "-o", bin, pkg)
		cmd.Env = append(os.Environ(), cgoEnv)
		return cmd.CombinedOutput()
	}
	if out, err := build("auto"); err != nil {
		t.Logf("go build -buildvcs=auto: %v\n%s", err, out)
		if out, err := build("false"); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	version = telemetry.VersionOf(bi)
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && !strings.Contains(version, s.Value[:12]) {
			t.Fatalf("version %q does not name the commit %s", version, s.Value)
		}
	}
	return bin, bi, version
}

// CleanEnv is this process's environment without FACTORY_* settings, which
// would change what a binary under test does.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FACTORY_") {
			env = append(env, kv)
		}
	}
	return env
}
