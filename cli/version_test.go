package cli_test

import (
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/telemetry"
)

// TestVersionThroughTheBinary builds factory with the VCS stamp a release
// build carries and checks that --version and `factory version` print the
// version its build info stands for, beside the control plane's; with the
// control plane unreachable the CLI's version still prints and the command
// exits 1.
func TestVersionThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := filepath.Join(t.TempDir(), "factory")
	build := func(vcs string) ([]byte, error) {
		// The environment may say -buildvcs=false; the command line wins.
		cmd := exec.Command("go", "build", "-buildvcs="+vcs, "-o", bin, "github.com/factory/factory/cli/cmd/factory")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // the CLI must build without cgo
		return cmd.CombinedOutput()
	}
	if out, err := build("auto"); err != nil {
		// A checkout git refuses to read cannot be stamped; the version is
		// then "dev", which is still checked.
		t.Logf("go build -buildvcs=auto: %v\n%s", err, out)
		if out, err := build("false"); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	client := telemetry.VersionOf(bi)
	t.Logf("client version %s", client)
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && !strings.Contains(client, s.Value[:12]) {
			t.Fatalf("version %q does not name the commit %s", client, s.Value)
		}
	}
	// The control plane runs in this test process: its version is this
	// test binary's.
	server := telemetry.Version()
	addr, token := startControlPlane(t)
	e := &e2e{t: t, bin: bin, addr: addr, stateFile: filepath.Join(t.TempDir(), "leases.json"), env: []string{"FACTORY_TOKEN=" + token}}

	if out := e.ok("--version"); out != "factory version "+client+"\n" {
		t.Errorf("--version: %q", out)
	}
	out := e.ok("version")
	if !strings.Contains(out, "Client Version:  "+client+" ("+bi.GoVersion) || !strings.Contains(out, "Server Version:  "+server+" (control plane at "+addr+")") {
		t.Errorf("version:\n%s", out)
	}
	var report struct {
		Client map[string]any `json:"client"`
		Server map[string]any `json:"server"`
	}
	if err := json.Unmarshal([]byte(e.ok("version", "-o", "json")), &report); err != nil {
		t.Fatal(err)
	}
	if report.Client["version"] != client || report.Client["go_version"] != bi.GoVersion || report.Server["version"] != server || report.Server["addr"] != addr || report.Server["error"] != nil {
		t.Errorf("version -o json: %+v", report)
	}

	down := &e2e{t: t, bin: bin, addr: "127.0.0.1:1", stateFile: e.stateFile, env: e.env}
	r := down.run("version")
	if r.code != 1 || !strings.Contains(r.stdout, "Client Version:  "+client+" (") || !strings.Contains(r.stdout, "Server Version:  unknown (control plane at 127.0.0.1:1)") ||
		!strings.Contains(r.stderr, "server version") {
		t.Errorf("version, control plane down: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = down.run("version", "-o", "json")
	report.Server = nil
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil {
		t.Fatalf("version -o json, control plane down: %v\n%s", err, r.stdout)
	}
	if r.code != 1 || report.Client["version"] != client || report.Server["error"] == nil || report.Server["version"] != nil {
		t.Errorf("version -o json, control plane down: exit %d, %+v", r.code, report)
	}
}
