// Package transporttest makes throwaway certificate authorities and
// certificates for TLS and mutual-TLS tests, written as PEM files the way an
// operator would hand them to the binaries' flags.
package transporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a server CA with a server certificate for 127.0.0.1, ::1 and
// localhost, a separate client CA with one client certificate, and an
// unrelated CA that trusts nothing here. Every field is a PEM file path.
type PKI struct {
	ServerCA, ServerCert, ServerKey string
	ClientCA, ClientCert, ClientKey string
	// OtherCA signed nothing of the above: verifying against it must fail.
	OtherCA string
	// StrangerCert and StrangerKey are a client certificate signed by
	// OtherCA: a client the server's client CA does not vouch for.
	StrangerCert, StrangerKey string
}

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// New writes a fresh PKI into a temporary directory of t.
func New(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{}
	serverCA := newCA(t, "factory test server CA")
	clientCA := newCA(t, "factory test client CA")
	otherCA := newCA(t, "unrelated CA")
	p.ServerCA = writeCert(t, dir, "server-ca.pem", serverCA.cert.Raw)
	p.ClientCA = writeCert(t, dir, "client-ca.pem", clientCA.cert.Raw)
	p.OtherCA = writeCert(t, dir, "other-ca.pem", otherCA.cert.Raw)

	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "factory-controlplane"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	p.ServerCert, p.ServerKey = issue(t, dir, "server", serverCA, server)
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "sidecar-gpu-01"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	p.ClientCert, p.ClientKey = issue(t, dir, "client", clientCA, client)
	stranger := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "stranger"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	p.StrangerCert, p.StrangerKey = issue(t, dir, "stranger", otherCA, stranger)
	return p
}

func newCA(t testing.TB, name string) authority {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return authority{cert: cert, key: key}
}

func issue(t testing.TB, dir, name string, ca authority, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeCert(t, dir, name+".pem", der)
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeCert(t testing.TB, dir, name string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
