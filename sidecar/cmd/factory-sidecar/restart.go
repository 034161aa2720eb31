package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

const (
	// defaultRestartTimeout bounds a restart command without its own.
	defaultRestartTimeout = 30 * time.Second
	// maxCommandOutput is what a result carries of a command's output (the
	// API's limit): the tail, where a script says what failed.
	maxCommandOutput = 64 << 10
)

// restarter runs the restart_command configured for an agent when the
// control plane asks for a restart.
func restarter(agents []agentConfig, log *slog.Logger) func(context.Context, *factoryv1.SidecarCommand) *factoryv1.CommandResult {
	byName := map[string]agentConfig{}
	for _, a := range agents {
		byName[a.Name] = a
	}
	return func(ctx context.Context, c *factoryv1.SidecarCommand) *factoryv1.CommandResult {
		name := c.GetRestartAgent().GetName()
		a, ok := byName[name]
		switch {
		case !ok:
			return &factoryv1.CommandResult{Error: fmt.Sprintf("agent %s is not on this host", name)}
		case a.RestartCommand == "":
			return &factoryv1.CommandResult{Error: fmt.Sprintf("agent %s has no restart_command in this sidecar's config", name)}
		}
		timeout := a.RestartTimeout
		if timeout <= 0 {
			timeout = defaultRestartTimeout
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", a.RestartCommand)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// A script that leaves a child holding its output open must not
		// outlive the timeout by more than this.
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		took := time.Since(start)
		output := out.Bytes()
		if len(output) > maxCommandOutput {
			output = output[len(output)-maxCommandOutput:]
		}
		r := &factoryv1.CommandResult{Ok: err == nil, Output: string(bytes.ToValidUTF8(output, []byte("?"))), Took: durationpb.New(took)}
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			r.Error = fmt.Sprintf("restart command timed out after %s", timeout)
		case err != nil:
			r.Error = "restart command: " + err.Error()
		}
		log.Info("restart command ran", "agent", name, "ok", r.Ok, "took", took.String(), "err", r.Error)
		return r
	}
}
