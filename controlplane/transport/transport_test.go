package transport

import (
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/transport/transporttest"
)

// TestIsLoopback reads targets the way grpc.NewClient does: the text after
// a '#' or '?' is never the address, an authority decides where DNS asks,
// and only a host that is loopback by its spelling passes.
func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   bool
	}{
		// Plain host:port, as listen addresses and most --addr values.
		{"127.0.0.1:7420", true},
		{"127.1.2.3:7420", true},
		{"127.0.0.1", true},
		{"[::1]:7420", true},
		{"[::1]", true},
		{"::1", true},
		{"[::ffff:127.0.0.1]:7420", true},
		{"localhost:7420", true},
		{"LOCALHOST", true},
		{"localhost", true},
		{":7420", false},
		{"", false},
		{"0.0.0.0:7420", false},
		{"[::]:7420", false},
		{"10.0.0.5:7420", false},
		{"192.0.2.2:7420", false},
		{"controlplane.internal:7420", false},
		{"localhost.:7420", false},
		{"localhost.localdomain:7420", false},
		{"app.localhost:7420", false},
		{"localhost.attacker.example:1", false},
		{"127.0.0.1.nip.io:7420", false},
		{"127.1:7420", false},
		{"0x7f.0.0.1:7420", false},
		{"127.000.000.001:7420", false},
		{"2130706433:7420", false},
		{"[::1%lo]:7420", false},
		{"127.0.0.1:", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1:99999", false},
		{"127.0.0.1:+7420", false},
		{" 127.0.0.1:7420", false},
		// userinfo: the host is what follows '@', which gRPC never strips.
		{"a@127.0.0.1:7420", false},
		{"127.0.0.1@192.0.2.2:7420", false},
		// The dns scheme: the endpoint is the path; a fragment or query
		// is not part of it.
		{"dns:///localhost:7420", true},
		{"dns:///127.0.0.1:7420", true},
		{"dns:127.0.0.1:7420", true},
		{"DNS:///127.0.0.1:7420", true},
		{"dns:///127.0.0.1:7420?x=/192.0.2.2:7420", true},
		{"dns:///127.0.0.1:7420#/192.0.2.2:7420", true},
		{"dns:///192.0.2.2:7420#/127.0.0.1:7420", false},
		{"dns:///192.0.2.2:7420?/127.0.0.1:7420", false},
		{"dns:///192.0.2.2:7420#127.0.0.1", false},
		{"dns:///controlplane:7420", false},
		{"dns://8.8.8.8/localhost:7420", false},
		{"dns://127.0.0.1:53/127.0.0.1:7420", false},
		{"dns://a@b/127.0.0.1:7420", false},
		{"dns:///", false},
		{"dns:///:7420", false},
		{"dns:///127.0.0.1:7420/../192.0.2.2", false},
		// Percent escapes are decoded, as gRPC does.
		{"dns:///127.0.0.1%3A7420", true},
		{"dns:///%31%32%37.0.0.1:7420", true},
		{"dns:///192.0.2.2%23/127.0.0.1:7420", false},
		{"dns:///%zz", false},
		{"127.0.0.1%2F@192.0.2.2:7420", false},
		// passthrough hands the endpoint to the dialer.
		{"passthrough:///127.0.0.1:1", true},
		{"passthrough:///[::1]:7420", true},
		{"passthrough:///192.0.2.2:7420#/127.0.0.1:7420", false},
		{"passthrough://localhost/192.0.2.2:7420", false},
		{"passthrough://127.0.0.1/127.0.0.1:7420", false},
		// Unix sockets never leave the machine.
		{"unix:///run/factory.sock", true},
		{"unix:run/factory.sock", true},
		{"unix-abstract:factory", true},
		{"unix://host/run/factory.sock", false},
		// A scheme gRPC does not know is part of the endpoint, under the
		// default scheme: "localhost:7420" is such a target.
		{"xds:///127.0.0.1:7420", false},
		{"http://127.0.0.1:7420", false},
		{"localhost:7420#/192.0.2.2:7420", true},
	} {
		if got := IsLoopback(tc.target); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v (reason: %v)", tc.target, got, tc.want, CheckLoopback(tc.target))
		}
	}
}

// TestCheckLoopbackSaysWhereItDials: the refusal names what gRPC would
// really dial, not what the target seems to say.
func TestCheckLoopbackSaysWhereItDials(t *testing.T) {
	err := CheckLoopback("dns:///192.0.2.2:7420#/127.0.0.1:7420")
	if err == nil || !strings.Contains(err.Error(), `"192.0.2.2:7420"`) {
		t.Errorf("got %v, want it to name 192.0.2.2:7420", err)
	}
	err = CheckLoopback("dns://8.8.8.8/localhost:7420")
	if err == nil || !strings.Contains(err.Error(), "8.8.8.8") {
		t.Errorf("got %v, want it to name the DNS server", err)
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
		{"plaintext refused to a fragment dressed as loopback", "dns:///192.0.2.2:7420#/127.0.0.1:7420", ClientTLS{}, "", PlaintextRule},
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
