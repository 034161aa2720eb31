// Command factory is the operator's and the agents' command line for the
// factory control plane. See `factory --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/telemetry"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tp, shutdown, err := telemetry.Setup(ctx, "factory-cli")
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: tracing: %v\n", err)
		return cli.ExitFailure
	}
	code := cli.Execute(ctx, cli.NewRootCommand(cli.Options{Stdout: os.Stdout, Stderr: os.Stderr, TracerProvider: tp}))

	// Flush on a fresh context: ctx is already cancelled after Ctrl-C, and
	// the spans of the call that was interrupted are worth keeping.
	flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(flushCtx); err != nil {
		fmt.Fprintf(os.Stderr, "warning: flushing traces: %v\n", err)
	}
	return code
}
