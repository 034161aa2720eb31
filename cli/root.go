// Package cli is the `factory` command: the operator's and the agents' way
// into the control plane. Operators create, inspect, move and watch tasks and
// steer the queue; agents claim, renew, complete and fail tasks, with their
// leases' fencing tokens kept in a local state file so a shell script never
// has to carry them around.
//
// Every command is built by NewRootCommand from Options, so tests run the
// whole tree in-process against a real or fake server, and Execute turns an
// error into the text and exit code a shell expects.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"

	"github.com/factory/factory/controlplane/telemetry"
	"github.com/factory/factory/controlplane/transport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// DefaultAddr is where a control plane listens when nobody says otherwise.
const DefaultAddr = "127.0.0.1:7420"

// Options wires the command tree to its surroundings. Zero values are
// usable: output goes to os.Stdout/os.Stderr and traces to the global
// provider.
type Options struct {
	Stdout io.Writer
	Stderr io.Writer
	// TracerProvider receives the command's root span and the gRPC client
	// spans under it; nil means otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// DialOptions are appended to the CLI's own, so tests can dial an
	// in-process listener.
	DialOptions []grpc.DialOption
}

// app holds what every command shares: the global flags and the wiring.
type app struct {
	opts    Options
	addr    string
	output  string
	timeout time.Duration
	tls     transport.ClientTLS
	// token is --token; fileToken and settingsPath come from the config
	// file (see credentials.go).
	token        string
	fileToken    string
	settingsPath string
	// out and errOut are Stdout and Stderr behind the terminal escaping.
	out, errOut io.Writer
}

const (
	outputTable = "table"
	outputJSON  = "json"
)

// NewRootCommand builds the whole `factory` command tree.
func NewRootCommand(opts Options) *cobra.Command {
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	a := &app{opts: opts}
	// Everything a command prints goes through these: no verb can print
	// an agent's ESC or bidi override raw (see escapeTerminal).
	a.out = newSafeWriter(opts.Stdout, a.jsonOutput)
	a.errOut = newSafeWriter(opts.Stderr, nil)

	root := &cobra.Command{
		Use:   "factory",
		Short: "Run the agentic factory: tasks, agents and the queue",
		Long: `factory talks to the factory control plane over gRPC.

Operators use it to create and inspect tasks, move them between states,
pause and resume the queue and watch it live. Agents use it to claim work,
renew their leases while they work and report the outcome; the CLI keeps
each agent's fencing tokens in a local state file so scripts only pass ids.

The queue's states are the runbook's folders:
  BACKLOG → READY → IN_PROGRESS → REVIEW → DONE, plus FAILED (the dead
  letter) and PAUSED.

Connections use TLS when --ca (or --tls, for the system's roots) is given,
with a client certificate from --cert/--key when the control plane requires
one. Without TLS the CLI talks plaintext only to an address that provably
stays on this machine (127.0.0.0/8, ::1, localhost, a unix: socket), read
the way gRPC reads it (dns:///HOST:PORT dials HOST:PORT whatever follows a
'#' or '?'), or anywhere with --insecure.

` + tokenHelp + `

Every command prints a table for people; -o wide adds columns where a
table has more to show (task ls, token ls) and is the table elsewhere.
For scripts, -o json prints the API's own JSON: proto field names, every
field present, enums by their full API names ("state": "TASK_STATE_READY"
where the table says READY), 64-bit integers as strings. -o yaml prints
the same data as YAML, and -o template='{{range .}}{{.id}} {{.state}}{{"\n"}}{{end}}'
runs a Go text/template over it (a missing key is an error).
Text from the server is printed with control and invisible characters
escaped (\x1b, \u202e), so an agent's task title cannot drive the
terminal (templates too); JSON and YAML keep every value exact.
A server error prints "error: <message> (<CODE>)" on stderr and exits 1;
so does a control plane that cannot be reached, refuses the token or
disagrees about TLS, with a message that says what to change (the code
stays last: UNAVAILABLE, DEADLINE_EXCEEDED, UNAUTHENTICATED); a usage
error exits 2.`,
		Example: `  factory task create --title "Summarise the RFC" --role researcher
  factory task ls --state ready --state in-progress
  FACTORY_AGENT=builder-1 factory task claim --role builder --wait 30s
  factory queue stats -o json`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// --version prints this; `factory version` adds the control plane's.
		Version: telemetry.Version(),
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := a.applyOutputFlag(); err != nil {
				return err
			}
			if a.timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			if err := a.applySettings(cmd); err != nil {
				return &runError{err: err}
			}
			return nil
		},
	}
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	// Cobra would add this flag itself, with help that says less.
	root.Flags().BoolP("version", "v", false, "print the CLI's version and exit (factory version adds the control plane's)")

	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", envOr("FACTORY_ADDR", DefaultAddr), "control plane address (env FACTORY_ADDR)")
	pf.StringVarP(&a.output, "output", "o", outputTable, "output format: table, wide, json, yaml, or template=GOTEMPLATE (Go text/template over the JSON data)")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline for each call to the control plane (claims add their --wait)")
	pf.StringVar(&a.tls.CAFile, "ca", os.Getenv("FACTORY_CA"), "verify the control plane's TLS certificate against this CA (PEM); turns TLS on (env FACTORY_CA)")
	pf.BoolVar(&a.tls.SystemRoots, "tls", false, "use TLS, verifying the control plane against the system's roots")
	pf.StringVar(&a.tls.CertFile, "cert", os.Getenv("FACTORY_CERT"), "client certificate (PEM) for a control plane that requires one (env FACTORY_CERT)")
	pf.StringVar(&a.tls.KeyFile, "key", os.Getenv("FACTORY_KEY"), "private key of --cert (PEM) (env FACTORY_KEY)")
	pf.BoolVar(&a.tls.Insecure, "insecure", false, "allow plaintext to a non-loopback --addr")
	// No default from the environment here: --help would print the secret.
	pf.StringVar(&a.token, "token", "", "bearer token for the control plane (else FACTORY_TOKEN, the config file, or ./data/operator.token on loopback)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputTable, outputWide, outputJSON, outputYAML, outputTemplate + "="}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newTaskCommand(a),
		newQueueCommand(a),
		newStatusCommand(a),
		newBenchCommand(a),
		newTokenCommand(a),
		newWhoAmICommand(a),
		newAuditCommand(a),
		newExportCommand(a),
		newImportCommand(a),
		newBackupCommand(a),
		newRestoreCommand(a),
		newDoctorCommand(a),
		newDigestCommand(a),
		newMaintenanceCommand(a),
		withCommands(newNodesCommand(a), newNodesDrainCommand(a), newNodesHistoryCommand(a),
			newNodesUndrainCommand(a), newNodesForgetCommand(a)),
		withCommands(newAgentsCommand(a), newAgentsRestartCommand(a), newAgentsPlaceCommand(a), newAgentsUnplaceCommand(a), newAgentsPlacementCommand(a)),
		newGPUCommand(a),
		newHealthCommand(a),
		newSpendCommand(a),
		newBudgetCommand(a),
		newEmergencyStopCommand(a),
		newAlertsCommand(a),
		newEventsCommand(a),
		newApprovalsCommand(a),
		newApproveCommand(a),
		newRejectCommand(a),
		newModifyCommand(a),
		newWorkCommand(a),
		newMCPCommand(a),
		newPipelineCommand(a),
		newVersionCommand(a),
	)
	rejectUnknownSubcommands(root)
	markRunErrors(root)
	return root
}

// Execute runs cmd (built by NewRootCommand) with ctx, prints any error the
// way a shell user expects and returns the process exit code.
func Execute(ctx context.Context, cmd *cobra.Command) int {
	ran, err := cmd.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if ran == nil {
		ran = cmd
	}
	return reportError(ran, err)
}

// rejectUnknownSubcommands gives every group command (one with
// subcommands and nothing to run itself) a RunE: cobra would print its help
// and exit 0 for "factory task lss", so a typo in a script passed. Without
// arguments the group still prints its help; with one it is a usage error
// (exit 2) naming the unknown command and the nearest known ones.
func rejectUnknownSubcommands(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			return unknownSubcommandError(c, args[0])
		}
	}
	for _, sub := range cmd.Commands() {
		rejectUnknownSubcommands(sub)
	}
}

// unknownSubcommandError is cobra's own text for an unknown command under
// the root, so every level of the tree reads the same.
func unknownSubcommandError(cmd *cobra.Command, name string) error {
	var hint strings.Builder
	if !cmd.DisableSuggestions {
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if suggestions := cmd.SuggestionsFor(name); len(suggestions) > 0 {
			hint.WriteString("\n\nDid you mean this?\n")
			for _, s := range suggestions {
				fmt.Fprintf(&hint, "\t%s\n", s)
			}
		}
	}
	return usageErrorf("unknown command %q for %q%s", name, cmd.CommandPath(), hint.String())
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func (a *app) stdout() io.Writer { return a.out }
func (a *app) stderr() io.Writer { return a.errOut }

// rawStdout is standard output unescaped, for data that must stay byte
// for byte what the server sent (`factory export -`); never for text.
func (a *app) rawStdout() io.Writer { return a.opts.Stdout }

// jsonOutput reports whether -o asks for data (json, yaml, a template),
// which the data writers render, rather than a table.
func (a *app) jsonOutput() bool { return isDataOutput(a.output) }

// dial opens a client connection. Nothing is sent until the first call.
func (a *app) dial() (*grpc.ClientConn, error) {
	dialOpts, err := a.tls.DialOptions(a.addr)
	if err != nil {
		return nil, err
	}
	creds, err := a.credentials()
	if err != nil {
		return nil, err
	}
	dialOpts = append(dialOpts, creds...)
	dialOpts = append(dialOpts,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(a.opts.TracerProvider), otelgrpc.WithPropagators(telemetry.Propagator()))),
		grpc.WithChainUnaryInterceptor(defaultDeadline(a.timeout)),
	)
	// After defaultDeadline, so a failed call knows how long it waited.
	dialOpts = append(dialOpts, a.dialContext().interceptors()...)
	dialOpts = append(dialOpts, a.opts.DialOptions...)
	conn, err := grpc.NewClient(a.addr, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", a.addr, err)
	}
	return conn, nil
}

// defaultDeadline gives every unary call the --timeout unless the caller
// already set a deadline (a claim that waits sets a longer one). Streams are
// left alone: a watch runs until Ctrl-C.
func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// withQueue runs fn with a queue client inside one span named after the
// command, so a CLI call that makes several RPCs (paging, imports) is still
// one trace.
func (a *app) withQueue(cmd *cobra.Command, fn func(ctx context.Context, q factoryv1.QueueServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	defer conn.Close()
	if err := fn(ctx, factoryv1.NewQueueServiceClient(conn)); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	return nil
}

// spanName is the command path, such as "factory task ls".
func spanName(cmd *cobra.Command) string {
	return strings.TrimSpace(cmd.CommandPath())
}
