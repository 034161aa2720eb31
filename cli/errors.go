package cli

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	text := err.Error()
	// A wrapped status error reads "ctx: rpc error: code = X desc = msg";
	// people want "ctx: msg (X)".
	if raw := st.Error(); strings.HasSuffix(text, raw) {
		text = strings.TrimSuffix(text, raw) + s.Message()
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
