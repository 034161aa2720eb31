package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/factory/factory/controlplane/telemetry"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// versionReport is what `factory version` prints: this CLI's build and the
// control plane's version.
type versionReport struct {
	Client telemetry.Build `json:"client"`
	Server serverVersion   `json:"server"`
}

// serverVersion is the control plane's side of `factory version`.
type serverVersion struct {
	// Addr is the address the CLI asked.
	Addr string `json:"addr"`
	// Version is empty when the control plane could not be asked, or
	// predates the field.
	Version string `json:"version,omitempty"`
	// Error says why Version is unknown.
	Error string `json:"error,omitempty"`
}

func newVersionCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the CLI's version and the control plane's",
		Long: `Version prints how this CLI was built (its version, the Go toolchain,
the commit and whether the tree had uncommitted changes) and the version of
the control plane at --addr, which it asks with WhoAmI (any role's token
will do).

A version is a release tag; else a Go pseudo-version naming the commit the
binary was built from (v0.0.0-20261206222747-b851fd0ad9d1, "+dirty" when
the tree had changes); else "dev", for a build with neither.
factory-controlplane and factory-sidecar answer "version" and --version
the same way, and factory nodes shows each sidecar's.

factory --version prints the CLI's version alone and calls nobody. When
the control plane cannot be reached, or refuses the token, the CLI's
version is still printed and the command exits 1.`,
		Example: `  factory version
  factory --version
  factory version -o json | jq -r .server.version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			report := versionReport{Client: telemetry.VersionInfo(), Server: serverVersion{Addr: a.addr}}
			err := a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				resp, err := c.WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
				if err != nil {
					return err
				}
				report.Server.Version = resp.GetVersion()
				return nil
			})
			if err != nil {
				report.Server.Error = describeError(err)
				// The CLI's own version is worth printing either way: it
				// is what a bug report needs first.
				err = fmt.Errorf("server version: %w", err)
			}
			if a.jsonOutput() {
				if werr := writeJSON(a.stdout(), report); werr != nil {
					return werr
				}
				return err
			}
			tw := newTable(a.stdout())
			fmt.Fprintf(tw, "Client Version:\t%s\n", report.Client)
			server := report.Server.Version
			if server == "" {
				server = "unknown"
			}
			fmt.Fprintf(tw, "Server Version:\t%s (control plane at %s)\n", server, report.Server.Addr)
			if ferr := tw.Flush(); ferr != nil {
				return ferr
			}
			return err
		},
	}
}
