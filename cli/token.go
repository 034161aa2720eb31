package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withAccess is withQueue for the AccessService.
func (a *app) withAccess(cmd *cobra.Command, fn func(ctx context.Context, c factoryv1.AccessServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = fn(ctx, factoryv1.NewAccessServiceClient(conn))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

var roleNames = map[string]factoryv1.Role{
	"operator": factoryv1.Role_ROLE_OPERATOR,
	"agent":    factoryv1.Role_ROLE_AGENT,
	"sidecar":  factoryv1.Role_ROLE_SIDECAR,
}

// roleName is a role as people type it: operator, agent, sidecar.
func roleName(r factoryv1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

func newTokenCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue, list and revoke access tokens",
		Long: `Tokens say who is calling the control plane. Each has a role:

  operator  may do everything;
  agent     its subject is an agent name: it claims, renews, completes and
            fails tasks only as that agent and only in the task roles the
            token grants (--roles; see grant), creates tasks and reads the
            queue;
  sidecar   its subject is a host name: it acts only for its own host and
            the agents an operator placed on it (factory agents place).

A token's secret is shown once, when it is created; the control plane keeps
only a hash of it. At first start the control plane makes one operator
token and writes it to DATA_DIR/operator.token (mode 0600).

` + tokenHelp + `

Token commands need an operator token.`,
		Example: `  factory token create --role agent --subject forge --roles builder,tester --expires 720h
  factory token ls
  factory token grant 0193a2b4-... --roles builder,deployer
  factory token revoke 0193a2b4-...
  factory token rotate --role agent --grace 1h --out-dir ./new-tokens`,
	}
	cmd.AddCommand(newTokenCreateCommand(a), newTokenListCommand(a), newTokenGrantCommand(a), newTokenRevokeCommand(a))
	cmd.AddCommand(newTokenRotateCommand(a))
	return cmd
}

func newTokenCreateCommand(a *app) *cobra.Command {
	var (
		role, subject, description string
		roles                      []string
		expires                    time.Duration
		quiet                      bool
	)
	cmd := &cobra.Command{
		Use:   "create --role ROLE --subject NAME [flags]",
		Short: "Issue a token and print its secret, once",
		Long: `Create issues a token for an agent (--subject is its agent name), a
sidecar (--subject is its host name) or an operator (--subject names the
person). The secret is printed once and cannot be shown again: hand it to
its holder now. --expires limits how long it works (720h = 30 days);
without it, it works until revoked.

An agent token claims only the task roles --roles grants ("*" grants every
role); one made without --roles claims only tasks that name no role, until
"factory token grant" grants some. Other roles' tokens take no --roles.

--quiet prints only the secret, for scripts. -o json prints the token and
its secret as one object.`,
		Example: `  factory token create --role agent --subject forge --roles builder --description "builder on gpu-1"
  factory token create --role agent --subject scout --roles researcher,writer
  factory token create --role sidecar --subject gpu-1 --expires 720h
  FACTORY_TOKEN=$(factory token create --role agent --subject forge --quiet) factory whoami`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, ok := roleNames[strings.ToLower(role)]
			if !ok {
				return usageErrorf("--role %q: want operator, agent or sidecar", role)
			}
			req := &factoryv1.CreateTokenRequest{Role: r, Subject: subject, Description: description, Roles: roles}
			if len(roles) > 0 && r != factoryv1.Role_ROLE_AGENT {
				return usageErrorf("--roles: only agent tokens carry roles, not a %s token", roleName(r))
			}
			if expires < 0 {
				return usageErrorf("--expires must not be negative")
			}
			if expires > 0 {
				req.ExpiresIn = durationpb.New(expires)
			}
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				resp, err := c.CreateToken(ctx, req)
				switch {
				case err != nil:
					return err
				case a.jsonOutput():
					return writeProto(a.stdout(), resp)
				case quiet:
					_, err := fmt.Fprintln(a.stdout(), resp.GetSecret())
					return err
				}
				return writeNewToken(a.stdout(), resp, configPath())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "operator, agent or sidecar (required)")
	f.StringVar(&subject, "subject", "", "who holds it: an agent name, a host name or a person (required)")
	f.StringVar(&description, "description", "", "what the token is for")
	f.DurationVar(&expires, "expires", 0, "how long the token works, such as 720h; 0: until revoked")
	f.StringSliceVar(&roles, "roles", nil, `for an agent token, the task roles it may claim, comma-separated ("*": every role); none: only tasks without a role`)
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the secret")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.MarkFlagRequired("subject")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"operator", "agent", "sidecar"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func writeNewToken(w io.Writer, resp *factoryv1.CreateTokenResponse, config string) error {
	t := resp.GetToken()
	fmt.Fprintf(w, "Created token %s for %s %s", t.GetId(), roleName(t.GetRole()), t.GetSubject())
	if t.GetRole() == factoryv1.Role_ROLE_AGENT {
		fmt.Fprintf(w, ", claiming %s", grantName(t.GetRoles()))
	}
	if t.GetExpiresAt() != nil {
		fmt.Fprintf(w, ", expiring %s", t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, ".\n\nSecret (shown only now; the control plane keeps just its hash):\n\n  %s\n\n", resp.GetSecret())
	fmt.Fprintf(w, "Give it to its holder, who sends it with every call, for example:\n\n")
	fmt.Fprintf(w, "  FACTORY_TOKEN=%s factory whoami\n\n", resp.GetSecret())
	if config != "" {
		fmt.Fprintf(w, "or keeps it in %s as\n\n  token: %s\n", config, resp.GetSecret())
	}
	return nil
}

func newTokenListCommand(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tokens (never their secrets)",
		Long: `Ls lists the tokens that work, oldest first: id, role, subject, when it
was made, when it expires and when it was last used (updated about once a
minute). --all adds revoked and expired ones. Secrets are never shown: the
control plane does not have them.`,
		Example: `  factory token ls
  factory token ls --all -o json | jq -r '.[] | select(.role=="ROLE_AGENT") | .subject'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				var tokens []*factoryv1.Token
				page := ""
				for {
					resp, err := c.ListTokens(ctx, &factoryv1.ListTokensRequest{IncludeInactive: all, PageSize: 1000, PageToken: page})
					if err != nil {
						return err
					}
					tokens = append(tokens, resp.GetTokens()...)
					if page = resp.GetNextPageToken(); page == "" {
						break
					}
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), tokens)
				}
				return writeTokenTable(a.stdout(), tokens, time.Now())
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include revoked and expired tokens")
	return cmd
}

func tokenStatus(t *factoryv1.Token, now time.Time) string {
	switch {
	case t.GetRevokedAt() != nil:
		return "revoked"
	case t.GetExpiresAt() != nil && !now.Before(t.GetExpiresAt().AsTime()):
		return "expired"
	}
	return "active"
}

func writeTokenTable(w io.Writer, tokens []*factoryv1.Token, now time.Time) error {
	if wideOutput(w) {
		return writeTokenTableWide(w, tokens, now)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tROLE\tSUBJECT\tCLAIMS\tSTATUS\tCREATED\tEXPIRES\tLAST USED\tDESCRIPTION")
	for _, t := range tokens {
		expires := "never"
		if t.GetExpiresAt() != nil {
			expires = t.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		}
		claims := "-"
		if t.GetRole() == factoryv1.Role_ROLE_AGENT {
			claims = strings.Join(t.GetRoles(), ",")
			if claims == "" {
				claims = "(none)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetId(), roleName(t.GetRole()), t.GetSubject(), claims, tokenStatus(t, now),
			humanAge(t.GetCreatedAt(), now), expires, humanAge(t.GetLastUsedAt(), now), orDash(truncate(t.GetDescription(), 40)))
	}
	return tw.Flush()
}

// writeTokenTableWide adds who made each token and when it was revoked,
// shows times as timestamps and the description whole: what an audit of
// the tokens needs.
func writeTokenTableWide(w io.Writer, tokens []*factoryv1.Token, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tROLE\tSUBJECT\tCLAIMS\tSTATUS\tCREATED\tCREATED BY\tEXPIRES\tREVOKED\tLAST USED\tDESCRIPTION")
	stamp := func(ts *timestamppb.Timestamp, unset string) string {
		if ts == nil {
			return unset
		}
		return ts.AsTime().UTC().Format(time.RFC3339)
	}
	for _, t := range tokens {
		claims := "-"
		if t.GetRole() == factoryv1.Role_ROLE_AGENT {
			claims = strings.Join(t.GetRoles(), ",")
			if claims == "" {
				claims = "(none)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetId(), roleName(t.GetRole()), escapeTerminal(t.GetSubject()),
			escapeTerminal(claims), tokenStatus(t, now), stamp(t.GetCreatedAt(), "-"), orDash(escapeTerminal(t.GetCreatedBy())),
			stamp(t.GetExpiresAt(), "never"), stamp(t.GetRevokedAt(), "-"), stamp(t.GetLastUsedAt(), "never"), orDash(escapeTerminal(t.GetDescription())))
	}
	return tw.Flush()
}

// grantName is an agent token's grant as the CLI says it.
func grantName(roles []string) string {
	switch {
	case len(roles) == 0:
		return "no role (only tasks without one)"
	case len(roles) == 1 && roles[0] == "*":
		return "every role (*)"
	}
	return "roles " + strings.Join(roles, ", ")
}

func newTokenGrantCommand(a *app) *cobra.Command {
	var roles []string
	cmd := &cobra.Command{
		Use:   "grant ID --roles ROLE[,ROLE...]",
		Short: "Set the task roles an agent token may claim",
		Long: `Grant replaces an agent token's grant: afterwards it claims tasks only in
the roles named (tasks without a role stay open to every agent). "*" grants
every role; --roles "" takes every role away. The change holds from the
token's next call to this control plane, and within about a second on other
replicas. Audited with the grant before and after.

Agent tokens made before grants existed were upgraded to "*" (they claimed
any role); narrow them with this command. "factory token ls" shows each
token's grant under CLAIMS.

Here and in revoke, a unique prefix of the id will do (0193a2b4 for
0193a2b4-7c1e-...); a prefix that several ids start with is refused with
those tokens listed.`,
		Example: `  factory token grant 0193a2b4-7c1e-7000-8000-5f2a9c0e1d3b --roles researcher,writer
  factory token grant 0193a2b4-... --roles '*'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("roles") {
				return usageErrorf("--roles is required: the whole grant after the change (\"\" for none)")
			}
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				id, err := resolveTokenID(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.SetTokenRoles(ctx, &factoryv1.SetTokenRolesRequest{TokenId: id, Roles: roles})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetToken())
				}
				t := resp.GetToken()
				_, err = fmt.Fprintf(a.stdout(), "Token %s (agent %s) now claims %s.\n", t.GetId(), t.GetSubject(), grantName(t.GetRoles()))
				return err
			})
		},
	}
	cmd.Flags().StringSliceVar(&roles, "roles", nil, `the task roles the token may claim, comma-separated ("*": every role; "": none)`)
	return cmd
}

func newTokenRevokeCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: its next call fails",
		Long: `Revoke ends a token at once: the holder's next call to this control plane
fails with UNAUTHENTICATED (other replicas follow within about a second).
The token stays listed under ls --all, marked revoked. Revoking twice is
harmless.

A unique prefix of the id will do; a prefix that several ids start with is
refused with those tokens listed, and nothing is revoked.`,
		Example: `  factory token revoke 0193a2b4-7c1e-7000-8000-5f2a9c0e1d3b
  factory token revoke 0193a2b4-7c1e
  factory token ls -o json | jq -r '.[] | select(.subject=="forge") | .id' | xargs -n1 factory token revoke`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				id, err := resolveTokenID(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: id})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetToken())
				}
				t := resp.GetToken()
				_, err = fmt.Fprintf(a.stdout(), "Revoked token %s (%s %s).\n", t.GetId(), roleName(t.GetRole()), t.GetSubject())
				return err
			})
		},
	}
}

func newWhoAmICommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the control plane thinks you are",
		Long: `Whoami asks the control plane whose token this CLI sends: its role,
subject and id, when it expires, and where the CLI found it. It works with
any role's token, so it is the quick check that a token is right.

` + tokenHelp,
		Example: `  factory whoami
  FACTORY_TOKEN=fct_... factory whoami -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, from, err := a.tokenSource()
			if err != nil {
				return err
			}
			return a.withAccess(cmd, func(ctx context.Context, c factoryv1.AccessServiceClient) error {
				resp, err := c.WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				tw := newTable(a.stdout())
				fmt.Fprintf(tw, "Role:\t%s\n", roleName(resp.GetRole()))
				fmt.Fprintf(tw, "Subject:\t%s\n", resp.GetSubject())
				fmt.Fprintf(tw, "Token:\t%s\n", resp.GetTokenId())
				expires := "never"
				if resp.GetExpiresAt() != nil {
					expires = resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "Expires:\t%s\n", expires)
				if resp.GetRole() == factoryv1.Role_ROLE_AGENT {
					fmt.Fprintf(tw, "Claims:\t%s\n", grantName(resp.GetRoles()))
				}
				fmt.Fprintf(tw, "Token from:\t%s\n", from)
				fmt.Fprintf(tw, "Control plane:\t%s\n", a.addr)
				return tw.Flush()
			})
		},
	}
}
