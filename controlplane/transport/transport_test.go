package transport

import (
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/transport/transporttest"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7420":               true,
		"127.1.2.3:7420":               true,
		"[::1]:7420":                   true,
		"localhost:7420":               true,
		"LOCALHOST":                    true,
		"dns:///localhost:7420":        true,
		"passthrough:///127.0.0.1:1":   true,
		"unix:///run/factory.sock":     true,
		":7420":                        false,
		"0.0.0.0:7420":                 false,
		"[::]:7420":                    false,
		"10.0.0.5:7420":                false,
		"controlplane.internal:7420":   false,
		"dns:///controlplane:7420":     false,
		"localhost.attacker.example:1": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheckListenStatesTheRule(t *testing.T) {
	if err := CheckListen("127.0.0.1:7420", false, false); err != nil {
		t.Errorf("loopback plaintext: %v", err)
	}
	if err := CheckListen("0.0.0.0:7420", true, false); err != nil {
		t.Errorf("TLS on every interface: %v", err)
	}
	if err := CheckListen(":7420", false, true); err != nil {
		t.Errorf("--insecure: %v", err)
	}
	err := CheckListen(":7420", false, false)
	if err == nil || !strings.Contains(err.Error(), PlaintextRule) || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("plaintext on every interface: got %v, want the rule and the way out", err)
	}
}

func TestClientCredentialsFollowTheRule(t *testing.T) {
	pki := transporttest.New(t)
	for _, tc := range []struct {
		name     string
		addr     string
		c        ClientTLS
		protocol string // "" when an error is wanted
		errHas   string
	}{
		{"plaintext to loopback", "127.0.0.1:7420", ClientTLS{}, "insecure", ""},
		{"plaintext refused off loopback", "10.0.0.5:7420", ClientTLS{}, "", PlaintextRule},
		{"insecure allows it", "10.0.0.5:7420", ClientTLS{Insecure: true}, "insecure", ""},
		{"CA turns TLS on", "10.0.0.5:7420", ClientTLS{CAFile: pki.ServerCA}, "tls", ""},
		{"system roots", "factory.example:443", ClientTLS{SystemRoots: true}, "tls", ""},
		{"client certificate", "10.0.0.5:7420", ClientTLS{CAFile: pki.ServerCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}, "tls", ""},
		{"certificate without key", "10.0.0.5:7420", ClientTLS{CAFile: pki.ServerCA, CertFile: pki.ClientCert}, "", "--key"},
		{"insecure with TLS", "10.0.0.5:7420", ClientTLS{CAFile: pki.ServerCA, Insecure: true}, "", "--insecure"},
		{"missing CA file", "127.0.0.1:7420", ClientTLS{CAFile: pki.ServerCA + ".missing"}, "", "no such file"},
		{"CA file that is not PEM", "127.0.0.1:7420", ClientTLS{CAFile: pki.ClientKey}, "", "no PEM certificate"},
	} {
		creds, err := tc.c.Credentials(tc.addr)
		switch {
		case tc.protocol == "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.errHas)
		case tc.protocol != "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.protocol != "" && creds.Info().SecurityProtocol != tc.protocol:
			t.Errorf("%s: security protocol %q, want %q", tc.name, creds.Info().SecurityProtocol, tc.protocol)
		}
	}
}

func TestServerTLSConfig(t *testing.T) {
	pki := transporttest.New(t)
	if cfg, err := (ServerTLS{}).Config(); cfg != nil || err != nil {
		t.Fatalf("no settings: got %v, %v; want plaintext", cfg, err)
	}
	cfg, err := ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.ClientCA}.Config()
	if err != nil || cfg.ClientCAs == nil || len(cfg.Certificates) != 1 {
		t.Fatalf("mutual TLS: %v, %v", cfg, err)
	}
	for name, s := range map[string]ServerTLS{
		"key missing":       {CertFile: pki.ServerCert},
		"client CA only":    {ClientCAFile: pki.ClientCA},
		"mismatched key":    {CertFile: pki.ServerCert, KeyFile: pki.ClientKey},
		"unreadable client": {CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.ServerKey},
	} {
		if _, err := s.Config(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
