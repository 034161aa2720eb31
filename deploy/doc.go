// Package deploy is the deploy kit: systemd units, the compose file and
// its Dockerfile, Prometheus's scrape config, Grafana's provisioning and
// the four dashboards the runbook names, example configs, and the
// pipeline templates the CLI embeds (Pipelines). Besides that embedding
// it holds no code; its tests check that every file parses and that the pieces agree
// with each other (the compose file mounts files that exist, Prometheus
// scrapes the port the control plane serves metrics on, the compose file
// publishes none of the runbook's ports and health-checks the control
// plane, every dashboard panel uses the ${datasource} variable, both
// sidecar configs run the LiteLLM poller). That every metric and label the
// dashboards query is exported is checked against a running control plane
// in controlplane/server (TestKitQueriesMatchTheScrape).
package deploy
