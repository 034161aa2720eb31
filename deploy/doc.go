// Package deploy is the deploy kit: systemd units, the compose file and
// its Dockerfile, Prometheus's scrape config, Grafana's provisioning and
// the four dashboards the runbook names, example configs, and the
// pipeline templates the CLI embeds (Pipelines). Besides that embedding
// it holds no code; its tests check that every file parses and that the pieces agree
// with each other (the compose file mounts files that exist, Prometheus
// scrapes the port the control plane serves metrics on, the dashboards use
// the provisioned datasource). That every metric the dashboards query is
// exported is checked against a running control plane in
// controlplane/server.
package deploy
