package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
)

// startControlPlaneAt serves a control plane on clock, with its data
// directory under work (so the CLI run from work finds
// data/operator.token), until the test ends; it returns its address.
func startControlPlaneAt(t *testing.T, clock *handClock, work string) string {
	t.Helper()
	return startControlPlaneWith(t, server.Config{DataDir: filepath.Join(work, "data"), Queue: queue.Config{Clock: clock}})
}

type rotateOutput struct {
	Rotated []struct {
		Role, Subject, Secret, File string
		OldTokenID                  string `json:"old_token_id"`
		OldExpiresAt                string `json:"old_expires_at"`
		NewTokenID                  string `json:"new_token_id"`
	} `json:"rotated"`
	Skipped []struct {
		TokenID string `json:"token_id"`
	} `json:"skipped"`
}

// TestTokenRotateThroughTheBinary runs `factory token rotate` as built
// against a control plane whose clock the test moves: the old secret works
// through the grace period and is refused from its end on, the new one
// works at once, the rotation is audited, and agents and sidecars cannot
// rotate.
func TestTokenRotateThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	clock := &handClock{now: time.Now().UTC().Truncate(time.Second)}
	work := t.TempDir()
	e := &e2e{t: t, bin: bin, addr: startControlPlaneAt(t, clock, work), stateFile: filepath.Join(t.TempDir(), "leases.json"), dir: work}

	forgeOld := strings.TrimSpace(e.ok("token", "create", "--role", "agent", "--subject", "forge", "--roles", "builder,tester", "--description", "builder on gpu-1", "--quiet"))
	anvil := strings.TrimSpace(e.ok("token", "create", "--role", "agent", "--subject", "anvil", "--roles", "*", "--quiet"))
	host := strings.TrimSpace(e.ok("token", "create", "--role", "sidecar", "--subject", "gpu-1", "--quiet"))

	// Agents and sidecars cannot rotate, and their refused calls change
	// nothing.
	for name, secret := range map[string]string{"agent": anvil, "sidecar": host} {
		if r := e.run("--token", secret, "token", "rotate", "--role", "agent"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
			t.Fatalf("%s rotating: %+v", name, r)
		}
	}
	if r := e.run("token", "rotate", "--role", "operator"); r.code != 2 || !strings.Contains(r.stderr, "operator tokens are not rotated") {
		t.Fatalf("rotating operators: %+v", r)
	}

	outDir := filepath.Join(t.TempDir(), "new-tokens")
	var res rotateOutput
	e.jsonOf(&res, "token", "rotate", "--role", "agent", "--subject", "forge", "--grace", "1h", "--out-dir", outDir, "-o", "json")
	if len(res.Rotated) != 1 || res.Rotated[0].Subject != "forge" || res.Rotated[0].Secret != "" {
		t.Fatalf("rotate -o json with --out-dir: %+v", res)
	}
	file := filepath.Join(outDir, "forge.token")
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 || res.Rotated[0].File != file {
		t.Fatalf("secret file %s: %v, %v (reported %q)", file, info, err, res.Rotated[0].File)
	}
	b, _ := os.ReadFile(file)
	forgeNew := strings.TrimSpace(string(b))
	wantEnd := clock.Now().Add(time.Hour).Format(time.RFC3339)
	if res.Rotated[0].OldExpiresAt != wantEnd {
		t.Fatalf("old token ends at %s, want %s", res.Rotated[0].OldExpiresAt, wantEnd)
	}

	// The new secret works at once, as forge with forge's grant.
	if out := e.ok("--token", forgeNew, "whoami"); !strings.Contains(out, "forge") || !strings.Contains(out, "roles builder, tester") {
		t.Fatalf("whoami with the new secret:\n%s", out)
	}
	// The old one works through the grace period...
	clock.Advance(time.Hour - time.Second)
	if out := e.ok("--token", forgeOld, "whoami"); !strings.Contains(out, "forge") {
		t.Fatalf("whoami with the old secret in the grace:\n%s", out)
	}
	// ...and not after it.
	clock.Advance(time.Second)
	if r := e.run("--token", forgeOld, "whoami"); r.code != 1 || !strings.Contains(r.stderr, "expired at "+wantEnd) {
		t.Fatalf("old secret after the grace: %+v", r)
	}
	for name, secret := range map[string]string{"new": forgeNew, "anvil's (not rotated)": anvil, "sidecar": host} {
		if r := e.run("--token", secret, "whoami"); r.code != 0 {
			t.Fatalf("%s secret after the grace: %+v", name, r)
		}
	}
	if out := e.ok("audit", "ls", "--target", res.Rotated[0].OldTokenID); !strings.Contains(out, "RotateTokens") {
		t.Fatalf("the rotation is not in the audit log:\n%s", out)
	}

	// Without --out-dir the secrets are printed, once; a second run in
	// the grace leaves the old secrets alone.
	out := e.ok("token", "rotate", "--role", "agent", "--grace", "10m")
	if !strings.Contains(out, "Rotated 2 token(s)") || !strings.Contains(out, "fct_") {
		t.Fatalf("rotate without --out-dir:\n%s", out)
	}
	e.jsonOf(&res, "token", "rotate", "--role", "agent", "--grace", "10m", "-o", "json")
	if len(res.Rotated) != 2 || len(res.Skipped) != 2 || !strings.HasPrefix(res.Rotated[0].Secret, "fct_") {
		t.Fatalf("second rotation in the grace: %+v", res)
	}
	var decoded map[string]any
	if err := json.Unmarshal([]byte(e.ok("--token", res.Rotated[0].Secret, "whoami", "-o", "json")), &decoded); err != nil {
		t.Fatal(err)
	}
}
