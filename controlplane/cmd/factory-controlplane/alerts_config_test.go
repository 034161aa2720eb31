package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/factory/factory/controlplane/notify"
)

func TestWebhookAndAlertSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "factory.yaml")
	if err := os.WriteFile(file, []byte(`alerts: /etc/factory/alerts.yaml
webhook_secret: from-file
webhooks:
  - name: chat
    url: https://chat.example/hook
    secret: own
    kinds: [alert, approval]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FACTORY_WEBHOOK_SECRET": "from-env", "FACTORY_WEBHOOK": "http://a.example/x, http://b.example/y"}
	getenv := func(k string) string { return env[k] }

	cfg, err := loadConfig([]string{"--config", file}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Alerts != "/etc/factory/alerts.yaml" || cfg.WebhookSecret != "from-env" {
		t.Errorf("alerts %q, secret %q", cfg.Alerts, cfg.WebhookSecret)
	}
	urls := func(hooks []notify.Webhook) []string {
		out := make([]string, len(hooks))
		for i, h := range hooks {
			out[i] = h.URL
		}
		return out
	}
	if got := urls(cfg.Webhooks); !slices.Equal(got, []string{"https://chat.example/hook", "http://a.example/x", "http://b.example/y"}) {
		t.Errorf("webhooks from file and env: %v", got)
	}
	if h := cfg.Webhooks[0]; h.Name != "chat" || h.Secret != "own" || !slices.Equal(h.Kinds, []notify.Kind{notify.KindAlert, notify.KindApproval}) {
		t.Errorf("file hook %+v", h)
	}

	// Flags win over the environment; --webhook repeats.
	cfg, err = loadConfig([]string{"--config", file, "--webhook", "http://c.example/1", "--webhook", "http://d.example/2",
		"--webhook-secret", "from-flag", "--alerts", "rules.yaml"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if got := urls(cfg.Webhooks); !slices.Equal(got, []string{"https://chat.example/hook", "http://c.example/1", "http://d.example/2"}) {
		t.Errorf("webhooks from file and flags: %v", got)
	}
	if cfg.WebhookSecret != "from-flag" || cfg.Alerts != "rules.yaml" {
		t.Errorf("flags: secret %q alerts %q", cfg.WebhookSecret, cfg.Alerts)
	}
}
