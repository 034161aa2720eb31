package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"gopkg.in/yaml.v3"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/transport"
)

// tokenHelp is how the CLI finds its token, for the help text.
const tokenHelp = `Every call carries a bearer token. The CLI takes the first of:
  --token, then FACTORY_TOKEN, then "token:" in the config file
  (factory/config.yaml in the user's config directory: ~/.config on
  Linux), then, only when --addr is a loopback address, the operator
  token the control plane writes at first start:
  $FACTORY_DATA_DIR/operator.token, or ./data/operator.token. So right
  after ` + "`make run`" + `, commands run from the same directory need no token.
The config file may also set "addr:", used when --addr and FACTORY_ADDR
are not given.`

// fileSettings is the CLI's config file.
type fileSettings struct {
	Token string `yaml:"token"`
	Addr  string `yaml:"addr"`
}

// configPath is the CLI's config file: factory/config.yaml in the user's
// config directory (~/.config on Linux); "" when there is none.
func configPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "factory", "config.yaml")
}

// loadSettings reads the config file; a missing file is no settings.
func loadSettings() (fileSettings, string, error) {
	var s fileSettings
	path := configPath()
	if path == "" {
		return s, "", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, path, nil
	}
	if err != nil {
		return s, path, fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file decodes as io.EOF: no settings.
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		return s, path, fmt.Errorf("config file %s: %w", path, err)
	}
	return s, path, nil
}

// applySettings fills what the command line and environment left unset
// from the config file. Run before any command.
func (a *app) applySettings(cmd *cobra.Command) error {
	s, path, err := loadSettings()
	if err != nil {
		return err
	}
	a.settingsPath = path
	if s.Addr != "" && !cmd.Flags().Changed("addr") && os.Getenv("FACTORY_ADDR") == "" {
		a.addr = s.Addr
	}
	a.fileToken = strings.TrimSpace(s.Token)
	return nil
}

// tokenSource is the token the CLI sends and where it came from ("" when
// there is none).
func (a *app) tokenSource() (secret, from string, err error) {
	switch {
	case a.token != "":
		return a.token, "--token", nil
	case os.Getenv("FACTORY_TOKEN") != "":
		return strings.TrimSpace(os.Getenv("FACTORY_TOKEN")), "FACTORY_TOKEN", nil
	case a.fileToken != "":
		return a.fileToken, a.settingsPath, nil
	case !transport.IsLoopback(a.addr):
		return "", "", nil
	}
	// The operator token next to a local control plane: what `make run`
	// leaves, so a fresh checkout works without a setup step.
	dir := os.Getenv("FACTORY_DATA_DIR")
	if dir == "" {
		dir = "data"
	}
	path := filepath.Join(dir, access.OperatorTokenFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("operator token: %w", err)
	}
	return strings.TrimSpace(string(b)), path, nil
}

// credentials is the dial option that sends the token with every call,
// or nothing when the CLI has no token (the control plane then says what
// is missing).
func (a *app) credentials() ([]grpc.DialOption, error) {
	secret, _, err := a.tokenSource()
	if err != nil || secret == "" {
		return nil, err
	}
	creds, err := a.tls.Credentials(a.addr)
	if err != nil {
		return nil, err
	}
	// gRPC sends a token over plaintext only if told to; the transport
	// rules have already limited plaintext to loopback or --insecure.
	plaintext := creds.Info().SecurityProtocol == "insecure"
	return []grpc.DialOption{grpc.WithPerRPCCredentials(callerToken{Bearer: access.Bearer{Secret: secret, Plaintext: plaintext}})}, nil
}

// callerToken is the CLI's token, unless a call's context names another:
// one connection can then carry calls by several callers (the bench's
// agents), each with its own token.
type callerToken struct{ access.Bearer }

type callTokenKey struct{}

// withCallToken makes the calls made with ctx carry secret instead of the
// CLI's own token.
func withCallToken(ctx context.Context, secret string) context.Context {
	return context.WithValue(ctx, callTokenKey{}, secret)
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c callerToken) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	if s, ok := ctx.Value(callTokenKey{}).(string); ok {
		return access.Bearer{Secret: s}.GetRequestMetadata(ctx, uri...)
	}
	return c.Bearer.GetRequestMetadata(ctx, uri...)
}
