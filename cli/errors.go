package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/transport"
)

// Exit codes. Scripts can tell a bad invocation from a refused call.
const (
	ExitOK      = 0
	ExitFailure = 1 // the call failed: a server error, a network error, a bad file
	ExitUsage   = 2 // the command line was wrong
)

// ExitError carries the exit code main should use for an error; any other
// error from a command exits ExitFailure.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// usageError is a mistake in the command line found by our own checks
// (conflicting flags, a malformed value); it gets the usage text like
// cobra's own flag errors.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// runError marks an error returned by a command's RunE after its command
// line was accepted. Anything cobra returns without this mark (unknown
// flag, wrong argument count, missing required flag) is a usage error.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// markRunErrors wraps every RunE in the tree so that reportError can tell a
// failed call from a bad command line.
func markRunErrors(cmd *cobra.Command) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if err := run(c, args); err != nil {
				return &runError{err: err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		markRunErrors(sub)
	}
}

// reportError prints err for a person and returns the exit code.
func reportError(cmd *cobra.Command, err error) int {
	w := cmd.ErrOrStderr()
	var usage *usageError
	var ran *runError
	if errors.As(err, &usage) || !errors.As(err, &ran) {
		fmt.Fprintf(w, "error: %s\n", err.Error())
		fmt.Fprint(w, cmd.UsageString())
		return ExitUsage
	}
	fmt.Fprintf(w, "error: %s\n", describeError(err))
	if st, ok := status.FromError(unwrapStatus(err)); ok {
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					fmt.Fprintf(w, "  %s: %s\n", v.GetField(), v.GetDescription())
				}
			}
		}
	}
	var coded *ExitError
	if errors.As(err, &coded) {
		return coded.Code
	}
	return ExitFailure
}

// describeError renders a gRPC status as "<message> (<CODE>)" and anything
// else as its text, keeping any context a command wrapped around it.
func describeError(err error) string {
	st := unwrapStatus(err)
	if st == nil {
		return err.Error()
	}
	s, _ := status.FromError(st)
	message := s.Message()
	var call *callError
	if errors.As(err, &call) {
		if explained := call.explain(); explained != "" {
			message = explained
		}
	}
	text := err.Error()
	// A wrapped status error reads "ctx: rpc error: code = X desc = msg";
	// people want "ctx: msg (X)".
	if raw := st.Error(); strings.HasSuffix(text, raw) {
		text = strings.TrimSuffix(text, raw) + message
	}
	return fmt.Sprintf("%s (%s)", text, codeName(s.Code()))
}

// unwrapStatus finds the gRPC status error inside err, or nil.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			return e
		}
	}
	return nil
}

// codeName spells a gRPC code the way the API's docs do: FAILED_PRECONDITION.
func codeName(c codes.Code) string {
	name := c.String()
	var b strings.Builder
	prevLower := false
	for _, r := range name {
		if prevLower && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		prevLower = unicode.IsLower(r)
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// isCode reports whether err carries the gRPC code c.
func isCode(err error, c codes.Code) bool {
	st := unwrapStatus(err)
	if st == nil {
		return false
	}
	return status.Code(st) == c
}

// dialContext is what a connection to the control plane was opened with,
// kept on its failed calls so that the error a person reads can say what
// to change: the address, the TLS flags, where the token came from.
type dialContext struct {
	addr string
	tls  transport.ClientTLS
	// tokenFrom is where the CLI's token came from (--token,
	// FACTORY_TOKEN, a file); "" when it sends none.
	tokenFrom string
}

// dialContext describes the connection a.dial opens.
func (a *app) dialContext() *dialContext {
	_, from, _ := a.tokenSource()
	return &dialContext{addr: a.addr, tls: a.tls, tokenFrom: from}
}

// interceptors keep every call's failure with the connection it was
// made on. Chained after defaultDeadline, they see the call's deadline.
func (d *dialContext) interceptors() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return d.wrap(ctx, cc, deadlineOf(ctx), invoker(ctx, method, req, reply, cc, opts...))
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, d.wrap(ctx, cc, deadlineOf(ctx), err)
			}
			return &explainedStream{ClientStream: s, ctx: ctx, cc: cc, dial: d}, nil
		}),
	}
}

// deadlineOf is how long a call had, 0 when it had no deadline.
func deadlineOf(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return time.Until(dl)
}

// explainedStream keeps a stream's failures with their connection: a
// refused token on a stream arrives with the first message, not on open.
type explainedStream struct {
	grpc.ClientStream
	ctx  context.Context
	cc   *grpc.ClientConn
	dial *dialContext
}

func (s *explainedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || err == io.EOF {
		return err
	}
	return s.dial.wrap(s.ctx, s.cc, 0, err)
}

// wrap puts a failure that could be the connection's or the token's into a
// callError; every other error is returned as it is.
func (d *dialContext) wrap(ctx context.Context, cc *grpc.ClientConn, budget time.Duration, err error) error {
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); !ok {
		return err
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unauthenticated:
	default:
		return err
	}
	return &callError{
		err:      err,
		dial:     d,
		ownToken: ctx.Value(callTokenKey{}) == nil,
		ready:    cc.GetState() == connectivity.Ready,
		budget:   budget,
	}
}

// callError is a failed call's gRPC status error with the connection it
// was made on. Its text and status are the status error's own, so code
// that checks codes or messages sees no difference; only reportError asks
// it to explain itself.
type callError struct {
	err  error
	dial *dialContext
	// ownToken: the call carried the CLI's token, not one a caller set
	// for it (the bench's agents).
	ownToken bool
	// ready: the connection was up when the call failed, so a deadline
	// was the server's slowness, not an unreachable address.
	ready  bool
	budget time.Duration
}

func (e *callError) Error() string              { return e.err.Error() }
func (e *callError) Unwrap() error              { return e.err }
func (e *callError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// explain says what went wrong in the terms of the CLI's flags, or ""
// when the server's message says it best. It may probe the address once
// (to tell a TLS server from something else), so it is only for an error
// about to be printed.
func (e *callError) explain() string {
	st := status.Convert(e.err)
	msg := st.Message()
	at := "the control plane at " + e.dial.addr
	switch st.Code() {
	case codes.Unauthenticated:
		return e.explainToken(at, msg)
	case codes.DeadlineExceeded:
		if e.ready && !strings.Contains(msg, "waiting for connections to become ready") {
			return ""
		}
		within := ""
		if e.budget > 0 {
			within = " within " + roundBudget(e.budget).String()
		}
		return fmt.Sprintf("no answer from %s%s; is it running and reachable from this machine? --timeout sets how long to wait", at, within)
	case codes.Unavailable:
		return e.dial.explainTransport(at, msg)
	}
	return ""
}

func (e *callError) explainToken(at, reason string) string {
	from := e.dial.tokenFrom
	switch {
	case strings.HasPrefix(reason, "transport: "):
		// gRPC's own refusal to send the token, not the server's.
		return ""
	case !e.ownToken:
		return fmt.Sprintf("%s does not accept this call's token: %s", at, reason)
	case from == "":
		// The server's refusal says where the CLI takes a token from.
		return fmt.Sprintf("%s needs a token: %s", at, reason)
	case from == "--token":
		return fmt.Sprintf("%s does not accept the token from --token: %s; check --token", at, reason)
	case from == "FACTORY_TOKEN":
		return fmt.Sprintf("%s does not accept the token from FACTORY_TOKEN: %s; check FACTORY_TOKEN, or give --token", at, reason)
	default:
		return fmt.Sprintf("%s does not accept the token from %s: %s; check that file, or give --token / FACTORY_TOKEN", at, from, reason)
	}
}

// roundBudget prints a call's deadline the way it was likely given: 30s,
// not 29.999812s.
func roundBudget(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// runningHint is what to check when nothing answers at the address.
func (d *dialContext) runningHint() string {
	if transport.IsLoopback(d.addr) {
		return "is it running? `make run` starts one, or set --addr / FACTORY_ADDR"
	}
	return "is it running there and reachable from this machine? --addr / FACTORY_ADDR set the address"
}

// explainTransport reads gRPC's connection errors. Their texts are the
// only place the cause is kept (gRPC folds every one into UNAVAILABLE), so
// these checks follow what the gRPC and crypto/tls packages write.
func (d *dialContext) explainTransport(at, msg string) string {
	// `connection error: desc = "transport: ..."`: the cause is inside.
	msg = strings.TrimSuffix(after(msg, `desc = "`), `"`)
	switch {
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return at + " does not speak TLS: drop --ca/--tls (plaintext is allowed only on loopback or with --insecure)"
	case strings.Contains(msg, "certificate signed by unknown authority"):
		if d.tls.CAFile != "" {
			return "cannot verify " + at + ": its certificate is not signed by the CA in --ca " + d.tls.CAFile
		}
		return "cannot verify " + at + ": its certificate is not signed by a CA this system trusts; give --ca FILE with the CA that signed it"
	case strings.Contains(msg, "x509: "):
		return "cannot verify " + at + ": " + after(msg, "x509: ")
	case strings.Contains(msg, "tls: certificate required"):
		if d.tls.CertFile == "" {
			return at + " requires a client certificate: give --cert FILE --key FILE"
		}
		// crypto/tls sends no certificate the server's client CAs did
		// not sign.
		return at + " requires a client certificate signed by its client CA, and the one in --cert " + d.tls.CertFile + " is not"
	case strings.Contains(msg, "remote error: tls: "):
		return at + " refused the TLS handshake: " + after(msg, "remote error: ")
	case strings.Contains(msg, "name resolver error") || strings.Contains(msg, "produced zero addresses"):
		return "cannot reach " + at + ": " + d.lookupFailure() + "; check --addr / FACTORY_ADDR"
	case strings.Contains(msg, "Error while dialing"):
		return "cannot reach " + at + ": " + dialFailure(after(msg, "Error while dialing: ")) + "; " + d.runningHint()
	case d.tls.CertFile == "" && transportTLS(d.tls) && (strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset by peer") || strings.HasSuffix(msg, "server preface: EOF")):
		// A server that wants a client certificate may hang up before
		// its alert is read.
		return at + " closed the connection after the TLS handshake; if it requires a client certificate, give --cert FILE --key FILE"
	case strings.Contains(msg, "server preface"):
		return d.explainNoPreface(at, msg)
	}
	return ""
}

// explainNoPreface covers a server that took the connection but never
// spoke HTTP/2: most often a TLS server read a plaintext client's
// greeting as a broken handshake and hung up.
func (d *dialContext) explainNoPreface(at, msg string) string {
	if !transportTLS(d.tls) && speaksTLS(d.addr) {
		return at + " speaks TLS: give --ca FILE (or --tls)"
	}
	what := "it took the connection but never answered as a gRPC server"
	if strings.HasSuffix(msg, "EOF") {
		what = "it closed the connection without answering as a gRPC server"
	}
	return "cannot reach " + at + ": " + what + "; is --addr the control plane's address?"
}

// transportTLS reports whether the flags turn TLS on, the way
// transport.ClientTLS decides.
func transportTLS(c transport.ClientTLS) bool {
	return c.CAFile != "" || c.SystemRoots || c.CertFile != "" || c.KeyFile != ""
}

// probeTimeout bounds the extra look an error message may take at the
// address.
const probeTimeout = 2 * time.Second

// speaksTLS reports whether the server at addr answers a TLS handshake.
// Only the handshake is sent and the certificate is not judged: the
// answer decides which flag the message names, nothing is trusted.
func speaksTLS(addr string) bool {
	hostPort, ok := dialTarget(addr)
	if !ok {
		return false
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: probeTimeout}, "tcp", hostPort,
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err == nil {
		conn.Close()
		return true
	}
	// An alert (a client certificate is required, say) is TLS talking.
	var alert tls.AlertError
	return errors.As(err, &alert)
}

// lookupFailure asks the resolver again why the control plane's name gave
// no address: gRPC's resolver keeps only "produced zero addresses".
func (d *dialContext) lookupFailure() string {
	hostPort, ok := dialTarget(d.addr)
	if !ok {
		return "its name does not resolve"
	}
	host, _, _ := net.SplitHostPort(hostPort)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	_, err := net.DefaultResolver.LookupHost(ctx, host)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return "no such host " + host
	case errors.As(err, &dnsErr):
		return "cannot resolve " + host + ": " + dnsErr.Err
	}
	return host + " does not resolve to an address"
}

// dialTarget is the host:port gRPC dials for addr ("dns:///h:p" and
// "passthrough:///h:p" included); false for a unix socket or anything
// else it cannot tell.
func dialTarget(addr string) (string, bool) {
	for _, scheme := range []string{"dns:///", "passthrough:///"} {
		addr = strings.TrimPrefix(addr, scheme)
	}
	addr, _, _ = strings.Cut(addr, "?")
	addr, _, _ = strings.Cut(addr, "#")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", false
	}
	return addr, true
}

// dialFailure shortens a net package dial error ("dial tcp 127.0.0.1:1:
// connect: connection refused") to its cause ("connection refused").
func dialFailure(s string) string {
	if i := strings.Index(s, "lookup "); i >= 0 && strings.Contains(s, "no such host") {
		host, _, _ := strings.Cut(s[i+len("lookup "):], " ")
		return "no such host " + strings.TrimSuffix(host, ":")
	}
	if i := strings.LastIndex(s, "connect: "); i >= 0 {
		return s[i+len("connect: "):]
	}
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// after is the text of s after the first sep, or s without it.
func after(s, sep string) string {
	if _, rest, ok := strings.Cut(s, sep); ok {
		return rest
	}
	return s
}
