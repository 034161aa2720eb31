package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/telemetry/versiontest"
)

// TestVersionFromTheBuild runs the built binary: --version and version
// print the version its build info stands for, before any setting is read,
// and the "listening" line carries it.
func TestVersionFromTheBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds factory-controlplane; skipped under -short")
	}
	bin, _, version := versiontest.Build(t, ".", "factory-controlplane", false)
	t.Logf("version %s", version)
	run := func(env []string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(versiontest.CleanEnv(), env...)
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
	cmd.Env = versiontest.CleanEnv()
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
