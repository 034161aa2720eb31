package cli_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
)

// operatorToken reads the operator token a control plane bootstrapped into
// its data directory.
func operatorToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mustAccess(t *testing.T, st store.Store, log *slog.Logger) *access.Service {
	t.Helper()
	acc, err := access.New(access.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

// as runs a command with another token than the shell's.
func (s *shell) as(token string, args ...string) result {
	s.t.Helper()
	saved := s.token
	s.token = token
	defer func() { s.token = saved }()
	return s.run(args...)
}

// mint makes a token and returns its secret. An agent token is granted
// roles, or every role ("*") when none are named.
func (s *shell) mint(role, subject string, roles ...string) string {
	s.t.Helper()
	args := []string{"token", "create", "--role", role, "--subject", subject, "--quiet"}
	if role == "agent" {
		if len(roles) == 0 {
			roles = []string{"*"}
		}
		args = append(args, "--roles", strings.Join(roles, ","))
	}
	return strings.TrimSpace(s.ok(args...))
}

func TestTokenCommands(t *testing.T) {
	sh := newShell(t)
	out := sh.ok("token", "create", "--role", "agent", "--subject", "forge", "--description", "builder", "--expires", "720h")
	if !strings.Contains(out, "fct_") || !strings.Contains(out, "FACTORY_TOKEN=") || !strings.Contains(out, "agent forge") {
		t.Fatalf("token create:\n%s", out)
	}
	var created struct {
		Token struct {
			ID      string `json:"id"`
			Role    string `json:"role"`
			Subject string `json:"subject"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(sh.ok("token", "create", "--role", "sidecar", "--subject", "gpu-1", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	if created.Token.Role != "ROLE_SIDECAR" || created.Token.Subject != "gpu-1" || !strings.HasPrefix(created.Secret, access.SecretPrefix) {
		t.Fatalf("token create -o json: %+v", created)
	}

	who := sh.as(created.Secret, "whoami")
	if who.code != 0 || !strings.Contains(who.stdout, "sidecar") || !strings.Contains(who.stdout, "gpu-1") || !strings.Contains(who.stdout, "--token") {
		t.Fatalf("whoami as the sidecar: %+v", who)
	}

	ls := sh.ok("token", "ls")
	for _, want := range []string{"forge", "gpu-1", "operator", "builder"} {
		if !strings.Contains(ls, want) {
			t.Fatalf("token ls lacks %q:\n%s", want, ls)
		}
	}
	if strings.Contains(ls, created.Secret) || strings.Contains(ls, "fct_") {
		t.Fatalf("token ls shows a secret:\n%s", ls)
	}

	if out := sh.ok("token", "revoke", created.Token.ID); !strings.Contains(out, "Revoked token "+created.Token.ID) {
		t.Fatalf("revoke: %s", out)
	}
	if r := sh.as(created.Secret, "whoami"); r.code != 1 || !strings.Contains(r.stderr, "revoked") || !strings.Contains(r.stderr, "UNAUTHENTICATED") {
		t.Fatalf("whoami with the revoked token: %+v", r)
	}
	if ls := sh.ok("token", "ls"); strings.Contains(ls, "gpu-1") {
		t.Fatalf("token ls lists a revoked token without --all:\n%s", ls)
	}
	if ls := sh.ok("token", "ls", "--all"); !strings.Contains(ls, "revoked") {
		t.Fatalf("token ls --all:\n%s", ls)
	}
	if r := sh.run("token", "create", "--role", "admin", "--subject", "x"); r.code != 2 {
		t.Fatalf("unknown role: %+v", r)
	}
}

func TestAgentTokensAreScoped(t *testing.T) {
	sh := newShell(t)
	forge := sh.mint("agent", "forge", "builder")
	sh.ok("task", "create", "--id", "job", "--title", "Job", "--role", "builder")

	r := sh.as(forge, "task", "claim", "--agent", "forge", "--role", "deployer", "--state-file", sh.stateFile)
	if r.code != 1 || !strings.Contains(r.stderr, "may not claim role deployer") || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("claim outside the token's roles: %+v", r)
	}
	r = sh.as(forge, "task", "claim", "--agent", "hammer", "--role", "builder", "--state-file", sh.stateFile)
	if r.code != 1 || !strings.Contains(r.stderr, "agent forge may not claim as agent hammer") || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("claim as another agent: %+v", r)
	}
	if r := sh.as(forge, "task", "claim", "--agent", "forge", "--role", "builder", "--state-file", sh.stateFile); r.code != 0 || !strings.Contains(r.stdout, "job") {
		t.Fatalf("claim as itself: %+v", r)
	}
	if r := sh.as(forge, "task", "done", "--agent", "forge", "--state-file", sh.stateFile); r.code != 0 {
		t.Fatalf("done as itself: %+v", r)
	}
	if r := sh.as(forge, "queue", "pause", "--reason", "mine now"); r.code != 1 || !strings.Contains(r.stderr, "may not call PauseQueue") {
		t.Fatalf("agent pausing the queue: %+v", r)
	}
	if r := sh.as(forge, "token", "ls"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("agent listing tokens: %+v", r)
	}
}

func TestAuditList(t *testing.T) {
	sh := newShell(t)
	forge := sh.mint("agent", "forge")
	sh.ok("task", "create", "--id", "job", "--title", "Job", "--role", "builder")
	sh.ok("task", "kill", "job", "--reason", "obsolete")
	sh.as(forge, "task", "requeue", "job", "--reason", "mine")

	out := sh.ok("audit", "ls", "--since", "24h")
	for _, want := range []string{"MoveTask", "CreateTask", "CreateToken", "state READY→FAILED", "PERMISSION_DENIED"} {
		if !strings.Contains(out, want) {
			t.Fatalf("audit ls lacks %q:\n%s", want, out)
		}
	}
	var byForge []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("audit", "ls", "--since", "24h", "--who", "forge", "-o", "json")), &byForge); err != nil {
		t.Fatal(err)
	}
	if len(byForge) != 1 || byForge[0]["outcome"] != "PERMISSION_DENIED" || byForge[0]["target"] != "job" {
		t.Fatalf("audit ls --who forge: %v", byForge)
	}
	var byOperator []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("audit", "ls", "--who", access.BootstrapSubject, "--limit", "2", "-o", "json")), &byOperator); err != nil {
		t.Fatal(err)
	}
	if len(byOperator) != 2 || byOperator[0]["rpc"] != "/factory.v1.QueueService/MoveTask" || !strings.Contains(byOperator[0]["before_json"].(string), "READY") {
		t.Fatalf("audit ls --who operator --limit 2: %v", byOperator)
	}
	var byTarget []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("audit", "ls", "--target", "job", "--limit", "2", "-o", "json")), &byTarget); err != nil {
		t.Fatal(err)
	}
	if len(byTarget) != 2 || byTarget[0]["outcome"] != "PERMISSION_DENIED" || byTarget[1]["rpc"] != "/factory.v1.QueueService/MoveTask" {
		t.Fatalf("audit ls --target job --limit 2: %v", byTarget)
	}
	if out := sh.ok("audit", "ls", "--target", "job", "--who", "forge"); strings.Count(out, "\n") != 2 || !strings.Contains(out, "PERMISSION_DENIED") {
		t.Fatalf("audit ls --target job --who forge:\n%s", out)
	}
	if out := sh.ok("audit", "ls", "--target", "queue"); strings.Count(out, "\n") != 1 {
		t.Fatalf("audit ls --target queue, never touched:\n%s", out)
	}
	if out := sh.ok("audit", "ls", "--since", "2000-01-01T00:00:00Z", "--who", "nobody"); strings.Count(out, "\n") != 1 {
		t.Fatalf("audit ls for nobody:\n%s", out)
	}
	if r := sh.run("audit", "ls", "--since", "yesterday"); r.code != 2 {
		t.Fatalf("bad --since: %+v", r)
	}
}

// Where the CLI finds its token, first match wins: --token, FACTORY_TOKEN,
// the config file, then (on loopback) ./data/operator.token.
func TestTokenSources(t *testing.T) {
	sh := newShell(t)
	fromFlag, fromEnv, fromConfig := sh.mint("agent", "flag"), sh.mint("agent", "env"), sh.mint("agent", "config")

	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	t.Setenv("FACTORY_DATA_DIR", "")
	work := t.TempDir()
	t.Chdir(work)
	// The operator's token where `make run` puts it.
	if err := os.MkdirAll(filepath.Join(work, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "data", access.OperatorTokenFile), []byte(sh.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	whoami := func(args ...string) string {
		t.Helper()
		r := sh.as("", append([]string{"whoami"}, args...)...)
		if r.code != 0 {
			t.Fatalf("whoami %v: %+v", args, r)
		}
		return r.stdout
	}
	subject := func(out string) string {
		for _, line := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(line, "Subject:"); ok {
				return strings.TrimSpace(rest)
			}
		}
		return ""
	}

	if got := subject(whoami()); got != access.BootstrapSubject {
		t.Fatalf("with no token given: subject %q, want the data directory's operator", got)
	}
	if err := os.MkdirAll(filepath.Join(config, "factory"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(config, "factory", "config.yaml"), []byte("token: "+fromConfig+"\naddr: "+sh.addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := subject(whoami()); got != "config" {
		t.Fatalf("with a config file: subject %q", got)
	}
	t.Setenv("FACTORY_TOKEN", fromEnv)
	if got := subject(whoami()); got != "env" {
		t.Fatalf("with FACTORY_TOKEN: subject %q", got)
	}
	if got := subject(whoami("--token", fromFlag)); got != "flag" {
		t.Fatalf("with --token: subject %q", got)
	}

	// The config file's addr is used when neither --addr nor FACTORY_ADDR
	// says otherwise.
	t.Setenv("FACTORY_ADDR", "")
	code, stdout, stderr := factory(t, "whoami")
	if code != 0 || subject(stdout) != "env" || !strings.Contains(stdout, sh.addr) {
		t.Fatalf("whoami with the config file's addr: exit %d\n%s%s", code, stdout, stderr)
	}
}
