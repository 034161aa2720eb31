//go:build faults || soak

package faults_test

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// proxy forwards TCP to a target until cut; while cut it swallows every
// byte both ways and accepts new connections into the same void, as a
// network partition does (nothing is refused, nothing arrives). heal ends
// the connections that lived through the cut, as the peers' keepalives
// eventually would, and forwards again.
type proxy struct {
	t      *testing.T
	lis    net.Listener
	target string
	cut    atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, lis: lis, target: target, conns: map[net.Conn]bool{}}
	go p.accept()
	t.Cleanup(func() {
		lis.Close()
		p.closeAll()
	})
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.track(c)
		go p.serve(c)
	}
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = true
	p.mu.Unlock()
}

func (p *proxy) serve(client net.Conn) {
	if p.cut.Load() {
		_, _ = io.Copy(io.Discard, client)
		client.Close()
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(server)
	go p.pipe(server, client)
	p.pipe(client, server)
}

// pipe copies from src to dst, dropping what it reads while cut.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// partition starts dropping traffic.
func (p *proxy) partition() { p.cut.Store(true) }

// heal ends the partition.
func (p *proxy) heal() {
	p.closeAll()
	p.cut.Store(false)
}
