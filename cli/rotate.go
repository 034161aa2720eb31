package cli

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// rotatedJSON is one rotated token as -o json prints it.
type rotatedJSON struct {
	Role         string `json:"role"`
	Subject      string `json:"subject"`
	OldTokenID   string `json:"old_token_id"`
	OldExpiresAt string `json:"old_expires_at"`
	NewTokenID   string `json:"new_token_id"`
	NewExpiresAt string `json:"new_expires_at,omitempty"`
	// Secret is the new secret, unless it went to File.
	Secret string `json:"secret,omitempty"`
	File   string `json:"file,omitempty"`
}

type skippedJSON struct {
	TokenID   string `json:"token_id"`
	Subject   string `json:"subject"`
	ExpiresAt string `json:"expires_at"`
}

type rotateJSON struct {
	Rotated []rotatedJSON `json:"rotated"`
	Skipped []skippedJSON `json:"skipped"`
}

func newTokenRotateCommand(a *app) *cobra.Command {
	var (
		role     string
		subjects []string
		grace    time.Duration
		outDir   string
	)
	cmd := &cobra.Command{
		Use:   "rotate --role agent|sidecar [--subject NAME]... [flags]",
		Short: "Replace every live token of a role, old secrets ending after a grace period",
		Long: `Rotate is the runbook's "rotate credentials" (10.3) in one call: every live
token of the role (only those of the --subject names, when given) gets a
new token with the same role, subject, description and task-role grant.
Each old secret keeps working through --grace (default 1h), so holders can
switch without a gap, and is then refused like an expired token; an old
token due to expire sooner keeps its own expiry (and still gets a
replacement, which lives as long as the old one was made to). Everything
happens in one transaction on the control plane: all matching tokens are
rotated, or none.

A token that stops working within the grace period anyway and has a newer
token of its subject (its replacement from an earlier rotation) is left
alone and listed as skipped, so running rotate twice does not replace the
old secrets again.

The new secrets are printed once. With --out-dir they are written instead
to DIR/<subject>.token (mode 0600; DIR/<subject>.<token id>.token when a
subject has several tokens) and not printed: copy each file to its holder.

Operator tokens are not rotated: create a new one and revoke the old one,
which also ends the console sessions made from it. The rotation is in the
audit log: one entry per rotated token, naming its replacement.`,
		Example: `  factory token rotate --role agent
  factory token rotate --role agent --subject forge --subject scout --grace 15m
  factory token rotate --role sidecar --grace 24h --out-dir ./new-tokens -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r factoryv1.Role
			switch strings.ToLower(role) {
			case "agent":
				r = factoryv1.Role_ROLE_AGENT
			case "sidecar":
				r = factoryv1.Role_ROLE_SIDECAR
			case "operator":
				return usageErrorf("--role operator: operator tokens are not rotated; create one (factory token create --role operator) and revoke the old one, which also ends its console sessions")
			default:
				return usageErrorf("--role %q: want agent or sidecar", role)
			}
			if grace < 0 {
				return usageErrorf("--grace must not be negative")
			}
			if outDir != "" {
				// Before rotating: secrets that cannot be written are lost.
				if err := os.MkdirAll(outDir, 0o700); err != nil {
					return fmt.Errorf("--out-dir: %w", err)
				}
				probe, err := os.CreateTemp(outDir, ".rotate-*")
				if err != nil {
					return fmt.Errorf("--out-dir %s is not writable: %w", outDir, err)
				}
				probe.Close()
				os.Remove(probe.Name())
			}
			req := &factoryv1.RotateTokensRequest{Role: r, Subjects: subjects, Grace: durationpb.New(grace)}
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				resp, err := c.RotateTokens(ctx, req)
				if err != nil {
					return err
				}
				return a.printRotation(resp, outDir)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "agent or sidecar (required)")
	f.StringArrayVar(&subjects, "subject", nil, "only this subject's tokens (an agent or host name); repeat for several")
	f.DurationVar(&grace, "grace", time.Hour, "how long the old secrets keep working, such as 15m; 0s ends them at once")
	f.StringVar(&outDir, "out-dir", "", "write each new secret to DIR/<subject>.token (mode 0600) instead of printing it")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"agent", "sidecar"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// secretFiles names each rotated token's secret file in dir: the subject
// (path-escaped, so a '/' in it stays in the name), with the token id too
// when the subject has several tokens.
func secretFiles(dir string, rotated []*factoryv1.RotatedToken) []string {
	per := map[string]int{}
	for _, rt := range rotated {
		per[rt.GetNewToken().GetSubject()]++
	}
	out := make([]string, len(rotated))
	for i, rt := range rotated {
		t := rt.GetNewToken()
		name := url.PathEscape(t.GetSubject())
		if per[t.GetSubject()] > 1 {
			name += "." + t.GetId()
		}
		out[i] = filepath.Join(dir, name+".token")
	}
	return out
}

// writeSecretFile writes a secret readable by its owner only, replacing
// the file whole.
func writeSecretFile(path, secret string) error {
	return writeBytesAtomic(path, []byte(secret+"\n"))
}

func (a *app) printRotation(resp *factoryv1.RotateTokensResponse, outDir string) error {
	stamp := func(t *factoryv1.Token) string {
		if t.GetExpiresAt() == nil {
			return ""
		}
		return t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
	}
	out := rotateJSON{Rotated: []rotatedJSON{}, Skipped: []skippedJSON{}}
	var files []string
	if outDir != "" {
		files = secretFiles(outDir, resp.GetRotated())
	}
	var failed []string
	for i, rt := range resp.GetRotated() {
		o, n := rt.GetOldToken(), rt.GetNewToken()
		item := rotatedJSON{Role: roleName(n.GetRole()), Subject: n.GetSubject(), OldTokenID: o.GetId(), OldExpiresAt: stamp(o),
			NewTokenID: n.GetId(), NewExpiresAt: stamp(n), Secret: rt.GetSecret()}
		if files != nil {
			item.Secret = ""
			if err := writeSecretFile(files[i], rt.GetSecret()); err != nil {
				failed = append(failed, fmt.Sprintf("%s (%s %s): %v", files[i], item.Role, item.Subject, err))
			} else {
				item.File = files[i]
			}
		}
		out.Rotated = append(out.Rotated, item)
	}
	for _, t := range resp.GetSkipped() {
		out.Skipped = append(out.Skipped, skippedJSON{TokenID: t.GetId(), Subject: t.GetSubject(), ExpiresAt: stamp(t)})
	}
	if err := a.writeRotation(out); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("the rotation happened, but %d new secret(s) could not be written and are lost: %s; "+
			"rotate those subjects again (their old secrets work until their grace ends)", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

func (a *app) writeRotation(out rotateJSON) error {
	if a.jsonOutput() {
		return writeJSON(a.stdout(), out)
	}
	w := a.stdout()
	if len(out.Rotated) == 0 {
		fmt.Fprintln(w, "No token rotated: no live token matched.")
	} else {
		fmt.Fprintf(w, "Rotated %d token(s); each old secret stops working at its END.\n\n", len(out.Rotated))
		tw := newTable(w)
		fmt.Fprintln(tw, "ROLE\tSUBJECT\tOLD TOKEN\tENDS\tNEW TOKEN\tSECRET")
		for _, r := range out.Rotated {
			where := r.Secret
			if r.File != "" {
				where = "in " + r.File
			} else if where == "" {
				where = "(not written)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Role, escapeTerminal(r.Subject), r.OldTokenID, r.OldExpiresAt, r.NewTokenID, where)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if out.Rotated[0].File == "" {
			fmt.Fprintln(w, "\nThe secrets are shown only now; the control plane keeps just their hashes.")
		}
	}
	for _, s := range out.Skipped {
		fmt.Fprintf(w, "Skipped token %s (%s): replaced before, it stops working at %s.\n", s.TokenID, escapeTerminal(s.Subject), s.ExpiresAt)
	}
	return nil
}
