package main

import (
	"flag"
	"strings"

	"github.com/factory/factory/controlplane/notify"
)

// alertFlags declares the alerting flags. --webhook is repeatable, so it
// is not re-applied like the others; the URLs it collects are returned for
// webhooksOf.
func alertFlags(fs *flag.FlagSet, cfg *fileConfig) *[]string {
	fs.StringVar(&cfg.Alerts, "alerts", cfg.Alerts, "alert rules (YAML, like deploy/alerts.yaml) overriding the built-in ones")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", cfg.WebhookSecret,
		"key of the HMAC-SHA256 signature (X-Factory-Signature) on webhook deliveries whose hook has no secret of its own")
	var urls []string
	fs.Func("webhook", "URL that receives every operator-facing event (alerts, approvals, digest, emergency stop) as a signed JSON POST; "+
		"repeatable (FACTORY_WEBHOOK: comma-separated; the config file's webhooks: list adds names, secrets and kinds)",
		func(v string) error {
			urls = append(urls, v)
			return nil
		})
	return &urls
}

// webhooksOf is the config file's hooks plus the --webhook URLs, or, when
// no flag names one, FACTORY_WEBHOOK's comma-separated URLs. URLs are
// checked when the server starts.
func webhooksOf(file []notify.Webhook, flagURLs []string, env string) []notify.Webhook {
	urls := flagURLs
	if len(urls) == 0 && strings.TrimSpace(env) != "" {
		for u := range strings.SplitSeq(env, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
	}
	out := append([]notify.Webhook(nil), file...)
	for _, u := range urls {
		out = append(out, notify.Webhook{URL: u})
	}
	return out
}
