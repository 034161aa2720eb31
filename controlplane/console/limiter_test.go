package console

import (
	"fmt"
	"testing"
)

// TestSignInLimiterKeepsFailuresWhenFull: many addresses cannot reset one
// address's count by filling the table; those with a clean record make
// room, and when none can, newcomers share one limiter.
func TestSignInLimiterKeepsFailuresWhenFull(t *testing.T) {
	l := newSignInLimiter()
	for range signInBurst {
		l.failed("192.0.2.1")
	}
	for i := range maxSignInPeers {
		l.get(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff))
	}
	if l.allowed("192.0.2.1") {
		t.Fatal("filling the table reset a limited address's count")
	}
	if len(l.byIP) > maxSignInPeers {
		t.Errorf("table holds %d clients, want at most %d", len(l.byIP), maxSignInPeers)
	}

	// Every entry now belongs to a client still paying for failures.
	l = newSignInLimiter()
	for i := range maxSignInPeers {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff)
		l.failed(ip)
	}
	for range signInBurst {
		l.failed("192.0.2.1")
	}
	if l.allowed("192.0.2.2") {
		t.Error("a newcomer to a table full of failing clients is not limited by the shared overflow")
	}
	if len(l.byIP) > maxSignInPeers {
		t.Errorf("table holds %d clients, want at most %d", len(l.byIP), maxSignInPeers)
	}
}

// TestSignInLimiterIPv6Prefix: addresses of one IPv6 /64 share a count.
func TestSignInLimiterIPv6Prefix(t *testing.T) {
	l := newSignInLimiter()
	for i := range signInBurst {
		l.failed(fmt.Sprintf("2001:db8::%x", i+1))
	}
	if l.allowed("2001:db8::ffff") {
		t.Error("a fresh address in the same /64 is not limited")
	}
	if !l.allowed("2001:db8:0:1::1") {
		t.Error("an address in another /64 is limited")
	}
}
