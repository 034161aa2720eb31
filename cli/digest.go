package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newDigestCommand(a *app) *cobra.Command {
	var since, until string
	cmd := &cobra.Command{
		Use:   "digest [--since TIME] [--until TIME]",
		Short: "Print the morning digest",
		Long: `Digest prints the morning digest (runbook §3.1), the card the control plane
sends to its webhooks daily: tasks completed, failed and stuck overnight,
the dead letter, yesterday's spend against the 7-day average, approvals
pending, agent health and the infrastructure.

The window runs from 18:00 yesterday in the factory's time zone until now,
unless --since/--until (RFC 3339, or a duration back from now such as 24h)
say otherwise.`,
		Example: `  factory digest
  factory digest --since 24h -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &factoryv1.GetDigestRequest{}
			var err error
			if req.Since, err = parseWhen("--since", since); err != nil {
				return err
			}
			if req.Until, err = parseWhen("--until", until); err != nil {
				return err
			}
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.GetDigest(ctx, req)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				_, err = fmt.Fprint(a.stdout(), resp.GetDigest().GetText())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "the window's start: RFC 3339 time or a duration ago (default 18:00 yesterday)")
	cmd.Flags().StringVar(&until, "until", "", "the window's end: RFC 3339 time or a duration ago (default now)")
	return cmd
}

// parseWhen reads an RFC 3339 time or a span back from now (parseSince);
// "" is unset.
func parseWhen(flag, v string) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	t, err := parseSince(v, time.Now())
	if err != nil {
		return nil, usageErrorf("%s: %v", flag, err)
	}
	return timestamppb.New(t), nil
}
