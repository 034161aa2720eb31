package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/transport"
)

// TestOperatorTokenOnlyForProvenLoopback: the operator token in the data
// directory is read for an address that provably stays on this machine,
// never for one that only looks like it (a fragment, a query, a DNS
// server, a host name), and such an address is refused without TLS before
// anything is dialled.
func TestOperatorTokenOnlyForProvenLoopback(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, access.OperatorTokenFile), []byte("op-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FACTORY_DATA_DIR", dir)
	t.Setenv("FACTORY_TOKEN", "")
	for _, addr := range []string{"127.0.0.1:7420", "localhost:7420", "dns:///[::1]:7420", "passthrough:///127.0.0.1:7420"} {
		a := &app{addr: addr}
		if secret, _, err := a.tokenSource(); err != nil || secret != "op-secret" {
			t.Errorf("%s: token %q (%v), want the operator's", addr, secret, err)
		}
	}
	for _, addr := range []string{
		"dns:///192.0.2.2:7420#/127.0.0.1:7420",
		"dns:///192.0.2.2:7420?/127.0.0.1:7420",
		"passthrough:///192.0.2.2:7420#/127.0.0.1:7420",
		"dns://192.0.2.53/localhost:7420",
		"127.0.0.1.nip.io:7420",
		"localhost.:7420",
		"a@127.0.0.1:7420",
	} {
		a := &app{addr: addr}
		if secret, from, err := a.tokenSource(); err != nil || secret != "" {
			t.Errorf("%s: read the operator token from %s (%v)", addr, from, err)
		}
		a.token = "explicit"
		if _, err := a.dial(); err == nil || !strings.Contains(err.Error(), transport.PlaintextRule) {
			t.Errorf("%s: dial got %v, want the plaintext rule", addr, err)
		}
		if _, err := a.credentials(); err == nil {
			t.Errorf("%s: a token would be attached to a plaintext connection", addr)
		}
	}
}
