package cli_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/transport/transporttest"
)

// TestErrorsSayWhatToChange runs the built factory binary against control
// planes that are not there, do not answer, refuse its token or disagree
// about TLS, and checks that each error names the cause and the flag to
// change instead of gRPC's transport text, keeps the status code last for
// scripts, and exits 1.
func TestErrorsSayWhatToChange(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	run := func(t *testing.T, env []string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		// No FACTORY_* from the test's environment, no user config, and a
		// working directory without ./data/operator.token.
		cmd.Env = append(append(cleanEnv(), "XDG_CONFIG_HOME="+t.TempDir()), env...)
		cmd.Dir = t.TempDir()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("factory %s: %v", strings.Join(args, " "), err)
		}
		return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	}
	// want checks a failed call: exit 1, one error line holding every
	// part, the code last, and none of gRPC's transport wording.
	want := func(t *testing.T, r result, code string, parts ...string) {
		t.Helper()
		line := strings.TrimSuffix(r.stderr, "\n")
		ok := r.code == cli.ExitFailure && strings.HasPrefix(line, "error: ") && !strings.Contains(line, "\n") &&
			strings.HasSuffix(line, " ("+code+")")
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		for _, raw := range []string{"transport:", "connection error", "desc =", "rpc error"} {
			ok = ok && !strings.Contains(line, raw)
		}
		if !ok {
			t.Errorf("exit %d, stderr %q\nwant exit %d and one line ending (%s) with %q", r.code, r.stderr, cli.ExitFailure, code, parts)
		}
	}

	t.Run("nothing listening", func(t *testing.T) {
		for _, verb := range [][]string{{"task", "ls"}, {"status"}, {"task", "watch"}} {
			r := run(t, nil, append([]string{"--addr", "127.0.0.1:1"}, verb...)...)
			want(t, r, "UNAVAILABLE", "cannot reach the control plane at 127.0.0.1:1: connection refused; is it running? `make run` starts one", "--addr / FACTORY_ADDR")
		}
	})

	t.Run("no such host", func(t *testing.T) {
		// Go's resolver answers .onion names itself, with no address
		// (RFC 7686), so no DNS server takes part.
		r := run(t, nil, "--addr", "nohost.onion:7420", "--insecure", "task", "ls")
		want(t, r, "UNAVAILABLE", "cannot reach the control plane at nohost.onion:7420: ", "; check --addr / FACTORY_ADDR")
	})

	t.Run("no answer", func(t *testing.T) {
		// A listener that takes connections and never speaks: a gRPC
		// client waits for the server's HTTP/2 settings until the call's
		// deadline.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		addr := ln.Addr().String()
		r := run(t, nil, "--addr", addr, "--timeout", "1s", "task", "ls")
		want(t, r, "DEADLINE_EXCEEDED", "no answer from the control plane at "+addr+" within 1s; is it running", "--timeout")
	})

	t.Run("wrong token", func(t *testing.T) {
		addr, _ := startControlPlane(t)
		r := run(t, []string{"FACTORY_TOKEN=fct_not-a-token"}, "--addr", addr, "task", "ls")
		want(t, r, "UNAUTHENTICATED", "the control plane at "+addr+" does not accept the token from FACTORY_TOKEN: unknown token", "check FACTORY_TOKEN")
		// A stream is refused with its first message, not when it opens.
		r = run(t, nil, "--addr", addr, "--token", "fct_not-a-token", "task", "watch")
		want(t, r, "UNAUTHENTICATED", "the control plane at "+addr+" does not accept the token from --token: unknown token", "check --token")
	})

	t.Run("TLS mismatch", func(t *testing.T) {
		pki := transporttest.New(t)
		tlsAddr := startTLSControlPlane(t, pki, "")
		plainAddr, _ := startControlPlane(t)
		mutualAddr := startTLSControlPlane(t, pki, pki.ClientCA)

		r := run(t, nil, "--addr", tlsAddr, "task", "ls")
		want(t, r, "UNAVAILABLE", "the control plane at "+tlsAddr+" speaks TLS: give --ca FILE (or --tls)")
		r = run(t, nil, "--addr", tlsAddr, "task", "watch")
		want(t, r, "UNAVAILABLE", "the control plane at "+tlsAddr+" speaks TLS: give --ca FILE (or --tls)")

		r = run(t, nil, "--addr", plainAddr, "--ca", pki.ServerCA, "task", "ls")
		want(t, r, "UNAVAILABLE", "the control plane at "+plainAddr+" does not speak TLS: drop --ca/--tls (plaintext is allowed only on loopback or with --insecure)")

		r = run(t, nil, "--addr", tlsAddr, "--ca", pki.OtherCA, "task", "ls")
		want(t, r, "UNAVAILABLE", "cannot verify the control plane at "+tlsAddr+": its certificate is not signed by the CA in --ca "+pki.OtherCA)

		r = run(t, nil, "--addr", mutualAddr, "--ca", pki.ServerCA, "task", "ls")
		want(t, r, "UNAVAILABLE", "the control plane at "+mutualAddr+" ", "give --cert FILE --key FILE")
	})
}
