package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTokenGrantChangesWhatAnAgentClaims(t *testing.T) {
	sh := newShell(t)
	var created struct {
		Token struct {
			ID    string   `json:"id"`
			Roles []string `json:"roles"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	out := sh.ok("token", "create", "--role", "agent", "--subject", "scout", "--roles", "writer,researcher", "-o", "json")
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	if strings.Join(created.Token.Roles, ",") != "researcher,writer" {
		t.Fatalf("created with roles %v, want [researcher writer]", created.Token.Roles)
	}
	if r := sh.run("token", "create", "--role", "sidecar", "--subject", "gpu-1", "--roles", "x"); r.code != 2 || !strings.Contains(r.stderr, "only agent tokens carry roles") {
		t.Fatalf("roles on a sidecar token: %+v", r)
	}
	if ls := sh.ok("token", "ls"); !strings.Contains(ls, "CLAIMS") || !strings.Contains(ls, "researcher,writer") {
		t.Fatalf("token ls does not show the grant:\n%s", ls)
	}

	sh.ok("task", "create", "--id", "ship", "--title", "Ship", "--role", "deployer")
	scout := created.Secret
	if r := sh.as(scout, "task", "claim", "--agent", "scout", "--role", "deployer", "--state-file", sh.stateFile); r.code != 1 ||
		!strings.Contains(r.stderr, "may not claim role deployer") {
		t.Fatalf("scout claiming deployer: %+v", r)
	}
	if out := sh.ok("token", "grant", created.Token.ID, "--roles", "deployer"); !strings.Contains(out, "now claims roles deployer") {
		t.Fatalf("token grant: %s", out)
	}
	if r := sh.as(scout, "whoami"); !strings.Contains(r.stdout, "roles deployer") {
		t.Fatalf("whoami after the grant: %+v", r)
	}
	if r := sh.as(scout, "task", "claim", "--agent", "scout", "--role", "deployer", "--state-file", sh.stateFile); r.code != 0 || !strings.Contains(r.stdout, "ship") {
		t.Fatalf("scout claiming deployer once granted: %+v", r)
	}
	if r := sh.run("token", "grant", created.Token.ID); r.code != 2 || !strings.Contains(r.stderr, "--roles is required") {
		t.Fatalf("grant without --roles: %+v", r)
	}
	if out := sh.ok("audit", "ls", "--since", "24h"); !strings.Contains(out, "SetTokenRoles") {
		t.Fatalf("the grant is not in the audit log:\n%s", out)
	}
}

func TestAgentsPlaceMovesAndUnplaces(t *testing.T) {
	sh := newShell(t)
	if out := sh.ok("agents", "place", "forge", "--host", "gpu-01"); !strings.Contains(out, "Placed agent forge on host gpu-01") {
		t.Fatalf("place: %s", out)
	}
	if out := sh.ok("agents", "place", "forge", "--host", "gpu-02"); !strings.Contains(out, "Moved agent forge from host gpu-01 to host gpu-02") {
		t.Fatalf("move: %s", out)
	}
	sh.ok("agents", "place", "scout", "--host", "gpu-01")
	out := sh.ok("agents", "placement")
	if !strings.Contains(out, "AGENT") || !strings.Contains(out, "forge") || !strings.Contains(out, "gpu-02") || !strings.Contains(out, "scout") {
		t.Fatalf("placement:\n%s", out)
	}
	if out := sh.ok("agents", "placement", "--host", "gpu-01"); strings.Contains(out, "forge") || !strings.Contains(out, "scout") {
		t.Fatalf("placement --host gpu-01:\n%s", out)
	}
	if out := sh.ok("agents", "unplace", "forge"); !strings.Contains(out, "no longer placed on host gpu-02") {
		t.Fatalf("unplace: %s", out)
	}
	if r := sh.run("agents", "unplace", "forge"); r.code == 0 || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Fatalf("unplacing twice: %+v", r)
	}
	if r := sh.run("agents", "place", "forge"); r.code != 2 {
		t.Fatalf("place without --host: %+v", r)
	}
}
