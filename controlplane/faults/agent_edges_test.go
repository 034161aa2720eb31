//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// edgeCLI runs the factory CLI in dir with none of the caller's FACTORY_*
// settings or config file: the exit status, stdout and stderr.
func edgeCLI(t *testing.T, dir string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary(t, "factory"), args...)
	cmd.Dir = dir
	cmd.Env = append(cleanFactoryEnv(dir), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		t.Fatalf("factory %s: still running after 30s", strings.Join(args, " "))
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String(), errOut.String()
	}
	if err != nil {
		t.Fatalf("factory %s: %v", strings.Join(args, " "), err)
	}
	return 0, out.String(), errOut.String()
}

// cleanFactoryEnv is the environment without FACTORY_* variables, with
// home and config directories in dir.
func cleanFactoryEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FACTORY_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, ".config"))
}

// countingListener accepts TCP connections on addr and counts them: a
// stand-in for the host a crafted target really dials.
func countingListener(t *testing.T, addr string) (net.Listener, *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { lis.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return lis, &n
}

// ownAddress is an address of this machine that is not loopback by its
// spelling (the repro's 192.0.2.2 stands for such a host), or "".
func ownAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// hostileRow09PlaintextTarget: `factory --addr 'dns:///192.0.2.2:7420#/127.0.0.1:7420' whoami`
// read the text after the last '/' as the address, passed the loopback
// rule and dialled 192.0.2.2 in plaintext with the operator token from
// ./data. The crafted target's real host here is a listener on this
// machine under a spelling that is not loopback by the rule (this host's
// own address, and "localhost."), so a dial would be seen: the CLI and the
// sidecar refuse with the rule, dial nothing and send nothing.
func hostileRow09PlaintextTarget(t *testing.T) {
	work := t.TempDir()
	// The operator token a control plane leaves in ./data: the CLI reads
	// it only for a loopback address.
	if err := os.MkdirAll(filepath.Join(work, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "data", "operator.token"), []byte("fac_operator_secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type host struct{ listen, dialAs string }
	hosts := []host{{"127.0.0.1:0", "localhost."}}
	if ip := ownAddress(); ip != "" {
		hosts = append([]host{{net.JoinHostPort(ip, "0"), ip}}, hosts...)
	} else {
		t.Log("no non-loopback address on this machine: only the localhost. spelling is replayed")
	}
	for _, h := range hosts {
		lis, dialled := countingListener(t, h.listen)
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		real := net.JoinHostPort(h.dialAs, port)
		for _, target := range []string{
			"dns:///" + real + "#/127.0.0.1:7420",
			"dns:///" + real + "?/127.0.0.1:7420",
			"passthrough:///" + real + "#/127.0.0.1:7420",
		} {
			for _, env := range [][]string{nil, {"FACTORY_TOKEN=fac_agent_secret"}} {
				code, out, errOut := edgeCLI(t, work, env, "--addr", target, "whoami")
				if code != 1 || !strings.Contains(errOut, "refusing plaintext") || !strings.Contains(errOut, "loopback") {
					t.Errorf("factory --addr %s whoami (env %v): exit %d\nstdout: %s\nstderr: %s\nwant exit 1 with the plaintext rule", target, env, code, out, errOut)
				}
			}
			// The sidecar: the health check, and the stream it would hold.
			for _, mode := range [][]string{{"--once"}, {"--spend-listen", "off"}} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				sc := exec.CommandContext(ctx, binary(t, "factory-sidecar"), append([]string{"--addr", target, "--token", "fac_sidecar_secret"}, mode...)...)
				sc.Dir, sc.Env = work, cleanFactoryEnv(work)
				out, err := sc.CombinedOutput()
				cancel()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "refusing plaintext") {
					t.Errorf("factory-sidecar --addr %s %v: %v\n%s\nwant exit 1 with the plaintext rule", target, mode, err, out)
				}
			}
		}
		if n := dialled.Load(); n != 0 {
			t.Errorf("%s: %d connection(s) reached the crafted target's real host", real, n)
		}
		// The listener does see a dial: --insecure (plaintext anywhere, on
		// the operator's word) reaches it. No token goes with it: the
		// operator token is never read for an address not proven loopback.
		code, _, errOut := edgeCLI(t, work, nil, "--insecure", "--timeout", "3s", "--addr", "dns:///"+real+"#/127.0.0.1:7420", "whoami")
		switch {
		case code != 0 && dialled.Load() > 0:
		case h.dialAs == "localhost.":
			// Whether "localhost." resolves depends on the resolver.
			t.Logf("--insecure to %s: exit %d, no connection (%s)", real, code, strings.TrimSpace(errOut))
		default:
			t.Errorf("--insecure to %s: exit %d, %d connection(s) (%s); want the dial seen, proving the listener watches", real, code, dialled.Load(), errOut)
		}
	}
}

// postSpend sends body to a sidecar's spend endpoint with the headers
// given (no Content-Type unless named): status and body.
func postSpend(t *testing.T, addr, body string, headers map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/spend", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post spend: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// hostileRow10SpendEndpoint: the sidecar's POST /v1/spend took a request
// with no Content-Type (a web page's "simple" cross-origin POST) and
// answered 202 for an unpriced model without a cost, which the relay
// later dropped. Replayed against a real sidecar that requires its spend
// secret: refused without it, 415 without JSON's type, 400 with the
// reason for the unpriced model, and a valid report is 202 and reaches the
// ledger, alone.
func hostileRow10SpendEndpoint(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	budget := factoryv1.NewBudgetServiceClient(op)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "spend.secret")
	if err := os.WriteFile(secretFile, []byte("edge-spend-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "spool-host", "spool-agent")
	spendAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sc := start(t, "sidecar", binary(t, "factory-sidecar"), []string{"FACTORY_TOKEN=" + token},
		"--addr", cp.addr, "--config", sidecarConfig(t, dir, "spool-host", "spool-agent"),
		"--spend-listen", spendAddr, "--spend-secret-file", secretFile)
	sc.WaitLog("spend endpoint", 30*time.Second, func(l logLine) bool { return l.Str("msg") == "spend endpoint listening" })

	now := time.Now().UTC().Format(time.RFC3339Nano)
	unpriced := `{"id":"row10-unpriced","agent":"spool-agent","model":"my-finetune-v3","tier":"mid","input_tokens":5000,"output_tokens":800,"occurred_at":"` + now + `"}`
	valid := `{"id":"row10-valid","agent":"spool-agent","model":"claude-sonnet-4","tier":"frontier","input_tokens":5000,"output_tokens":800,"occurred_at":"` + now + `"}`
	secret := map[string]string{"Authorization": "Bearer edge-spend-secret"}
	withJSON := func(h map[string]string) map[string]string {
		out := map[string]string{"Content-Type": "application/json"}
		for k, v := range h {
			out[k] = v
		}
		return out
	}

	if code, body := postSpend(t, spendAddr, valid, map[string]string{"Content-Type": "application/json"}); code != http.StatusUnauthorized {
		t.Errorf("no secret: %d %v, want 401", code, body)
	}
	if code, body := postSpend(t, spendAddr, valid, secret); code != http.StatusUnsupportedMediaType {
		t.Errorf("no Content-Type (curl -H 'Content-Type:'): %d %v, want 415", code, body)
	}
	if code, body := postSpend(t, spendAddr, valid, map[string]string{"Content-Type": "text/plain", "X-Factory-Spend-Secret": "edge-spend-secret"}); code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d %v, want 415", code, body)
	}
	code, body := postSpend(t, spendAddr, unpriced, withJSON(secret))
	if msg, _ := body["error"].(string); code != http.StatusBadRequest || body["field"] != "cost_micros" || !strings.Contains(msg, "my-finetune-v3") {
		t.Errorf("unpriced model without a cost: %d %v, want 400 naming cost_micros and the model", code, body)
	}
	if code, body := postSpend(t, spendAddr, valid, withJSON(secret)); code != http.StatusAccepted || body["id"] != "row10-valid" {
		t.Fatalf("valid report: %d %v, want 202", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(t, "the valid report reaches the ledger", 30*time.Second, func() bool { n, _ := spendTotals(ctx, budget); return n >= 1 })
	time.Sleep(500 * time.Millisecond) // a refused report relayed late would show by now
	resp, err := budget.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := resp.GetTotals().GetEvents(); n != 1 || resp.GetTotals().GetCostMicros() <= 0 {
		t.Errorf("ledger: %d event(s), %d µ$; want the one valid report, priced by the control plane", n, resp.GetTotals().GetCostMicros())
	}
	if n := sc.Count(func(l logLine) bool { return strings.Contains(l.Str("msg"), "dropped") }); n != 0 {
		t.Errorf("the relay dropped %d event(s): the endpoint accepted what the control plane refuses", n)
	}
}

// rawTerminalBytes returns the characters in s that a terminal would act
// on or hide, if any: control characters (but newline and tab), DEL, C1,
// and invisible format characters such as bidi overrides.
func rawTerminalBytes(s string) []string {
	var bad []string
	for i, r := range s {
		switch {
		case r == '\n' || r == '\t':
		case r == utf8.RuneError, r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x2028, r == 0x2029,
			unicode.Is(unicode.Cf, r) && r != 0x200c && r != 0x200d:
			bad = append(bad, fmt.Sprintf("%U at byte %d", r, i))
		}
	}
	return bad
}

// hostileRow11TerminalEscapes: an agent titled a task with ESC, OSC, C1
// CSI, BEL, NUL and bidi overrides, and `factory task ls/show` printed
// them raw to the operator's terminal. The agent creates the task through
// the API (argv cannot carry a NUL); every human-readable view prints it
// escaped, JSON keeps the exact title, and an error that echoes the
// agent's text is escaped too.
func hostileRow11TerminalEscapes(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	opToken := cp.operatorToken(t)
	op := dial(t, cp.addr, opToken)
	agent := dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	title := "\x1b[2J\x1b[H\x1b]0;factory: all clear\x07\u009b31mRED\u009b0m \u202eevil\u202c \u2066iso\u2069 bell\x07 nul\x00 del\x7f \u200bzw\ufeff"
	created, err := factoryv1.NewQueueServiceClient(agent).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: title, Kind: "research"})
	if status.Code(err) == codes.InvalidArgument && strings.Contains(title, "\x00") {
		t.Logf("a NUL in the title is refused (%v); replaying without it", err)
		title = strings.ReplaceAll(title, "\x00", "")
		created, err = factoryv1.NewQueueServiceClient(agent).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: title, Kind: "research"})
	}
	if err != nil {
		t.Fatalf("agent creates the task: %v", err)
	}
	id := created.GetTask().GetId()
	work := t.TempDir()
	cli := func(args ...string) (string, string) {
		t.Helper()
		code, out, errOut := edgeCLI(t, work, nil, append([]string{"--addr", cp.addr, "--token", opToken}, args...)...)
		if code != 0 {
			t.Fatalf("factory %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
		}
		return out, errOut
	}
	for _, args := range [][]string{{"task", "ls"}, {"task", "show", id}} {
		out, errOut := cli(args...)
		if bad := rawTerminalBytes(out + errOut); len(bad) > 0 {
			t.Errorf("factory %s prints raw %v:\n%q", strings.Join(args, " "), bad, out)
		}
		if !strings.Contains(out, `\x1b[2J`) || !strings.Contains(out, `\u202e`) {
			t.Errorf("factory %s: want the title shown with visible escapes:\n%s", strings.Join(args, " "), out)
		}
	}
	out, _ := cli("task", "show", id, "-o", "json")
	if bad := rawTerminalBytes(out); len(bad) > 0 {
		t.Errorf("task show -o json prints raw %v", bad)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["title"] != title {
		t.Errorf("task show -o json: title %q (%v), want the exact title %q", got["title"], err, title)
	}
	// The server's error echoes what was asked for.
	code, out, errOut := edgeCLI(t, work, nil, "--addr", cp.addr, "--token", opToken, "task", "show", "no\x1b]0;pwned\x07such")
	if code == 0 || len(rawTerminalBytes(out+errOut)) > 0 {
		t.Errorf("an error echoing the id: exit %d, raw %v in %q", code, rawTerminalBytes(out+errOut), errOut)
	}
}

// hostileRow13DataFileModes: factory.db and its WAL were 0644 in a 0755
// data dir. A control plane started on a fresh data dir (with the usual
// umask 022) makes the dir 0700 and every file in it 0600, while it runs
// and after it stops; a database left 0644 is tightened at the next start,
// and a data dir left wider is named in a warning.
func hostileRow13DataFileModes(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cp := startControlPlane(t, "controlplane", dataDir, "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := factoryv1.NewQueueServiceClient(op).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "something to write"}); err != nil {
		t.Fatal(err)
	}
	check := func(when string, wantFiles ...string) {
		t.Helper()
		seen := map[string]bool{}
		err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: %s is %v, want %v", when, p, fi.Mode().Perm(), want)
			}
			seen[d.Name()] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range wantFiles {
			if !seen[f] {
				t.Errorf("%s: no %s in the data dir (it holds %v)", when, f, seen)
			}
		}
	}
	check("running", "factory.db", "factory.db-wal", "factory.db-shm", "operator.token")
	cp.Stop()
	check("stopped", "factory.db", "operator.token")

	if err := os.Chmod(filepath.Join(dataDir, "factory.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cp = cp.restart(t)
	cp.WaitLog("a warning about the wide data dir", 10*time.Second, func(l logLine) bool {
		return l.Str("level") == "WARN" && strings.Contains(l.Str("msg"), "chmod 700")
	})
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	check("restarted on a database left 0644", "factory.db", "operator.token")
}
