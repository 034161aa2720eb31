// Package transport holds the connection rules every factory binary shares:
// when plaintext is allowed, how TLS and mutual TLS are set up on the server
// and on its clients (the CLI and the sidecar), and the message size limits
// both ends agree on.
//
// The rule for plaintext is the same everywhere (CheckLoopback): only to or
// on an address that provably stays on this machine (127.0.0.0/8, ::1,
// localhost, a unix socket), or when the operator says --insecure.
// Anything else needs TLS, so a credential never crosses a network in the
// clear by accident.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
)

// Message size limits. A request carries at most one 1 MiB payload per task
// (CreateTasks batches several), so 4 MiB bounds what one call may make the
// server buffer. Responses may be larger (a page of 1000 tasks), so clients
// accept more than they send.
const (
	MaxRequestBytes  = 4 << 20
	MaxResponseBytes = 64 << 20
)

// IsLoopback reports whether a gRPC dial target, or a listen address
// (host:port), provably names this machine only. It is the one plaintext
// check every binary uses: the CLI and the sidecar before they dial (and
// before the CLI reads the operator token from the data directory), and
// the control plane before it listens. See CheckLoopback for the rules.
func IsLoopback(target string) bool { return CheckLoopback(target) == nil }

// CheckLoopback says why target cannot be proven to name this machine
// only, or nil when it can. The target is read the way gRPC reads it (see
// grpc.NewClient): an RFC 3986 URL whose scheme names a registered
// resolver, else the whole text under the default scheme, so a query or a
// fragment is never the address and percent escapes are decoded. Proven
// loopback, and nothing else:
//   - "unix:" and "unix-abstract:" sockets, which never leave the machine;
//   - "dns" or "passthrough" (or no scheme) with no authority (a DNS
//     server named in the authority could answer anything) and an endpoint
//     whose host is a loopback IP (127.0.0.0/8, ::1, or an IPv4-mapped
//     loopback) or exactly "localhost" (in any case, no trailing dot), with
//     no port or a numeric one.
//
// Any other scheme gRPC knows, user info, a host name that merely starts
// with or resolves to a loopback address ("127.0.0.1.nip.io",
// "localhost."), an empty host (":7420", every interface) or any text this
// cannot read is refused: unsure means no.
func CheckLoopback(target string) error {
	scheme, authority, endpoint, err := parseTarget(target)
	if err != nil {
		return fmt.Errorf("not a target gRPC can read: %w", err)
	}
	switch scheme {
	case "unix", "unix-abstract":
		// gRPC itself refuses an authority here; so does the rule.
		if authority != "" {
			return fmt.Errorf("a %s target takes no authority (%q)", scheme, authority)
		}
		return nil
	case "dns", "passthrough", "":
	default:
		return fmt.Errorf("the %q scheme resolves the address in ways this rule cannot check", scheme)
	}
	if authority != "" {
		return fmt.Errorf("the authority %q (a DNS server or user info) decides where it dials", authority)
	}
	host, port := endpoint, ""
	if h, p, err := net.SplitHostPort(endpoint); err == nil {
		host, port = h, p
		if !validPort(port) {
			return fmt.Errorf("it dials %q: %q is not a port number", endpoint, port)
		}
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if !loopbackHost(host) {
		if host == "" {
			return fmt.Errorf("it dials %q, which has no host (every interface)", endpoint)
		}
		return fmt.Errorf("it dials %q, and %q is not a loopback address", endpoint, host)
	}
	return nil
}

// parseTarget splits target as grpc.NewClient does: scheme, authority
// (with any user info), and the endpoint the resolver dials. scheme is ""
// when gRPC would use its default scheme (dns, or passthrough for
// grpc.Dial); both read the endpoint the same way.
func parseTarget(target string) (scheme, authority, endpoint string, err error) {
	if u, err := url.Parse(target); err == nil && resolver.Get(u.Scheme) != nil {
		return u.Scheme, authorityOf(u), endpointOf(u), nil
	}
	// What gRPC does with a target whose scheme it does not know (or that
	// has none, like "127.0.0.1:7420" or "localhost:7420").
	u, err := url.Parse("dns:///" + target)
	if err != nil {
		return "", "", "", err
	}
	return "", authorityOf(u), endpointOf(u), nil
}

func authorityOf(u *url.URL) string {
	if u.User != nil {
		return u.User.String() + "@" + u.Host
	}
	return u.Host
}

// endpointOf is resolver.Target.Endpoint: the decoded path, else the
// opaque part, without its leading "/".
func endpointOf(u *url.URL) string {
	e := u.Path
	if e == "" {
		e = u.Opaque
	}
	return strings.TrimPrefix(e, "/")
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535 && strings.Trim(p, "0123456789") == ""
}

// loopbackHost: "localhost" exactly (host names ignore case), or an IP in
// 127.0.0.0/8 or ::1 (IPv4-mapped included), written the standard way
// (no "127.1", no zone).
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// PlaintextRule is the rule as operators read it in errors and help text.
const PlaintextRule = "plaintext is allowed only to a provably loopback address (127.0.0.0/8, ::1, localhost, a unix socket) or with --insecure"

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
	if tlsOn || insecureOK {
		return nil
	}
	// A listen address is host:port, which reads the same as a target.
	why := CheckLoopback(addr)
	if why == nil {
		return nil
	}
	return fmt.Errorf("refusing to serve plaintext on %s (%v): %s; give --tls-cert and --tls-key to serve TLS", addr, why, PlaintextRule)
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
		if c.Insecure {
			return insecure.NewCredentials(), nil
		}
		why := CheckLoopback(addr)
		if why == nil {
			return insecure.NewCredentials(), nil
		}
		return nil, fmt.Errorf("refusing plaintext to %s (%v): %s; give --ca FILE (or --tls for the system's roots) to use TLS", addr, why, PlaintextRule)
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
