// Package transport holds the connection rules every factory binary shares:
// when plaintext is allowed, how TLS and mutual TLS are set up on the server
// and on its clients (the CLI and the sidecar), and the message size limits
// both ends agree on.
//
// The rule for plaintext is the same everywhere: only to or on a loopback
// address (127.0.0.1, ::1, localhost), or when the operator says --insecure.
// Anything else needs TLS, so a credential never crosses a network in the
// clear by accident.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Message size limits. A request carries at most one 1 MiB payload per task
// (CreateTasks batches several), so 4 MiB bounds what one call may make the
// server buffer. Responses may be larger (a page of 1000 tasks), so clients
// accept more than they send.
const (
	MaxRequestBytes  = 4 << 20
	MaxResponseBytes = 64 << 20
)

// IsLoopback reports whether a host or host:port names the local machine
// only: localhost or a loopback IP. An empty host (":7420") listens on every
// interface, so it is not loopback.
func IsLoopback(addr string) bool {
	// gRPC targets may carry a scheme: "unix:PATH" never leaves the machine;
	// "dns:///host:port" and "passthrough:///host:port" name a host.
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return true
	}
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
		addr = addr[strings.LastIndex(addr, "/")+1:]
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// PlaintextRule is the rule as operators read it in errors and help text.
const PlaintextRule = "plaintext is allowed only on a loopback address (127.0.0.1, ::1, localhost) or with --insecure"

// ServerTLS configures the server's side of TLS.
type ServerTLS struct {
	// CertFile and KeyFile are the server's certificate chain and key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, when set, makes TLS mutual: every client must present a
	// certificate signed by one of these CAs (PEM).
	ClientCAFile string
}

// Enabled reports whether any TLS setting was given.
func (s ServerTLS) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" || s.ClientCAFile != "" }

// Config loads the files into a tls.Config; nil, nil when TLS is off.
func (s ServerTLS) Config() (*tls.Config, error) {
	if !s.Enabled() {
		return nil, nil
	}
	if s.CertFile == "" || s.KeyFile == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key (--tls-client-ca adds client certificates on top)")
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.ClientCAFile != "" {
		pool, err := loadPool(s.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// CheckListen applies the plaintext rule to a server about to listen on
// addr with tlsOn telling whether it serves TLS.
func CheckListen(addr string, tlsOn, insecureOK bool) error {
	if tlsOn || insecureOK || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("refusing to serve plaintext on %s: %s; give --tls-cert and --tls-key to serve TLS", addr, PlaintextRule)
}

// ClientTLS is how a client reaches the control plane.
type ClientTLS struct {
	// CAFile verifies the server against these CAs (PEM) instead of the
	// system's roots; it turns TLS on.
	CAFile string
	// SystemRoots turns TLS on with the system's roots, for a server whose
	// certificate comes from a public CA.
	SystemRoots bool
	// CertFile and KeyFile are a client certificate for mutual TLS; they
	// turn TLS on (with the system's roots unless CAFile is set).
	CertFile, KeyFile string
	// Insecure allows plaintext to a non-loopback address.
	Insecure bool
	// ServerName overrides the name the server's certificate is checked
	// against (default: the host in the address).
	ServerName string
}

func (c ClientTLS) tlsOn() bool {
	return c.CAFile != "" || c.SystemRoots || c.CertFile != "" || c.KeyFile != ""
}

// Credentials picks the transport credentials for a connection to addr:
// TLS when any TLS setting is given, otherwise plaintext, which the rule
// allows only to a loopback address or with Insecure.
func (c ClientTLS) Credentials(addr string) (credentials.TransportCredentials, error) {
	if !c.tlsOn() {
		if c.Insecure || IsLoopback(addr) {
			return insecure.NewCredentials(), nil
		}
		return nil, fmt.Errorf("refusing plaintext to %s: %s; give --ca FILE (or --tls for the system's roots) to use TLS", addr, PlaintextRule)
	}
	if c.Insecure {
		return nil, errors.New("--insecure means plaintext; it cannot be combined with --ca, --tls, --cert or --key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("a client certificate needs both --cert and --key")
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// DialOptions are the credentials and message limits for a client of the
// control plane at addr.
func (c ClientTLS) DialOptions(addr string) ([]grpc.DialOption, error) {
	creds, err := c.Credentials(addr)
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(creds), CallLimits()}, nil
}

// CallLimits caps what a client sends at what the server accepts, so an
// oversized request fails before it crosses the network, and lets it
// receive responses up to the server's send limit.
func CallLimits() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxRequestBytes), grpc.MaxCallRecvMsgSize(MaxResponseBytes))
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
