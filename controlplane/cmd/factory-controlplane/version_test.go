package main

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/telemetry"
)

// stampedBinary builds factory-controlplane with the VCS stamp a release
// build carries (the environment may say -buildvcs=false; the command line
// wins) and returns its path and the version its build info stands for.
func stampedBinary(t *testing.T) (bin, version string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "factory-controlplane")
	build := func(vcs string) ([]byte, error) {
		cmd := exec.Command("go", "build", "-buildvcs="+vcs, "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd.CombinedOutput()
	}
	if out, err := build("auto"); err != nil {
		// A checkout git refuses to read (another owner) cannot be
		// stamped; the version is then "dev", which is still checked.
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
	return bin, version
}

// TestVersionFromTheBuild runs the built binary: --version and version
// print the version its build info stands for, before any setting is read,
// and the "listening" line carries it.
func TestVersionFromTheBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds factory-controlplane; skipped under -short")
	}
	bin, version := stampedBinary(t)
	t.Logf("version %s", version)
	run := func(env []string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	// A broken setting in the environment or the config file must not hide
	// which binary this is.
	broken := []string{"FACTORY_LOG_LEVEL=loud", "FACTORY_CONFIG=" + filepath.Join(t.TempDir(), "missing.yaml")}
	if out, errOut, code := run(broken, "--version"); code != 0 || out != "factory-controlplane version "+version+"\n" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code := run(broken, "version")
	if code != 0 || !strings.HasPrefix(out, "factory-controlplane version "+version+" (") || strings.Count(out, "\n") != 1 {
		t.Errorf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := run(nil, "version", "now"); code != 1 || !strings.Contains(errOut, "no arguments") {
		t.Errorf("version with an argument: exit %d, stderr %q", code, errOut)
	}

	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--metrics-listen", "off", "--console-listen", "off")
	cmd.Env = cleanEnv()
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			var line struct {
				Msg     string `json:"msg"`
				Version *string
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				v := "(no version attribute)"
				if line.Version != nil {
					v = *line.Version
				}
				found <- v
				return
			}
		}
		close(found)
	}()
	select {
	case got, ok := <-found:
		if !ok {
			t.Fatal("the control plane exited without logging \"listening\"")
		}
		if got != version {
			t.Errorf("listening line: version %q, want %q", got, version)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no \"listening\" line in 30s")
	}
}

// cleanEnv is the test's environment without FACTORY_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FACTORY_") {
			env = append(env, kv)
		}
	}
	return env
}
