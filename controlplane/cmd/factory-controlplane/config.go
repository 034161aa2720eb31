package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/transport"
)

// fileConfig is the control plane's configuration. Precedence, lowest to
// highest: defaults, the YAML file (--config / FACTORY_CONFIG), FACTORY_*
// environment variables, flags.
type fileConfig struct {
	Listen         string `yaml:"listen"`
	DataDir        string `yaml:"data_dir"`
	Store          string `yaml:"store"`
	PostgresSchema string `yaml:"pg_schema"`
	DebugListen    string `yaml:"debug_listen"`
	MetricsListen  string `yaml:"metrics_listen"`
	// ConsoleListen serves the operator console: "auto" is a loopback
	// address two ports after Listen's, "off" turns it off. ConsoleURL
	// is its address as operators reach it (approval cards link to it);
	// ConsoleSessionTTL bounds a session.
	ConsoleListen     string        `yaml:"console_listen"`
	ConsoleURL        string        `yaml:"console_url"`
	ConsoleSessionTTL time.Duration `yaml:"console_session_ttl"`
	LogLevel          string        `yaml:"log_level"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	DefaultLease      time.Duration `yaml:"default_lease"`
	RetryBase         time.Duration `yaml:"retry_base"`
	RetryMax          time.Duration `yaml:"retry_max"`
	RescueInterval    time.Duration `yaml:"rescue_interval"`
	TLSCert           string        `yaml:"tls_cert"`
	TLSKey            string        `yaml:"tls_key"`
	TLSClientCA       string        `yaml:"tls_client_ca"`
	Insecure          bool          `yaml:"insecure"`
	RateLimit         float64       `yaml:"rate_limit"`
	RateBurst         int           `yaml:"rate_burst"`
	// AuditWindow and AuditRetention bound the audit log: identical
	// refusals within the window share one entry; entries last seen
	// longer ago than the retention are deleted (0 keeps them).
	AuditWindow    time.Duration `yaml:"audit_window"`
	AuditRetention time.Duration `yaml:"audit_retention"`
	// BackupDir, BackupEvery and BackupKeep schedule backups, VacuumEvery
	// vacuums (backup_config.go).
	BackupDir   string        `yaml:"backup_dir"`
	BackupEvery time.Duration `yaml:"backup_every"`
	BackupKeep  string        `yaml:"backup_keep"`
	VacuumEvery time.Duration `yaml:"vacuum_every"`
	// AuthFailRate and AuthFailBurst limit failed authentications per
	// peer address.
	AuthFailRate  float64 `yaml:"auth_fail_rate"`
	AuthFailBurst int     `yaml:"auth_fail_burst"`
	// MaxStreamsPerToken and MaxStreamsPerConnection cap concurrent
	// streams (watches, Connect, WaitApproval).
	MaxStreamsPerToken      int `yaml:"max_streams_per_token"`
	MaxStreamsPerConnection int `yaml:"max_streams_per_connection"`
	// HeartbeatInterval and OfflineAfter are the fleet's liveness
	// thresholds (runbook §5.1): a host is STALE after two missed
	// heartbeats and OFFLINE after OfflineAfter without a sign of life.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	OfflineAfter      time.Duration `yaml:"offline_after"`
	// MaxAgentsPerHost bounds the agents one sidecar's Hello may declare.
	MaxAgentsPerHost int `yaml:"max_agents_per_host"`
	// MaxLeasesPerAgent caps the leases one agent may hold at once.
	MaxLeasesPerAgent int `yaml:"max_leases_per_agent"`
	// TimeZone is the zone spend days are counted in; Prices replaces the
	// built-in price table (deploy/prices.yaml).
	TimeZone string `yaml:"time_zone"`
	Prices   string `yaml:"prices"`
	// RedisURL turns on the runbook's live spend counters in Redis.
	RedisURL string `yaml:"redis_url"`
	// DigestAt is the local time (in TimeZone) the morning digest is sent;
	// "off" sends none.
	DigestAt string `yaml:"digest_at"`
	// ApprovalPolicy is an optional YAML approval policy (tiers per kind,
	// auto-approval, reminders); ApprovalTimeout is the deadline of a
	// request that names none; ApprovalReminder, above 0, overrides the
	// policy's reminder point (a fraction of the time to the deadline).
	// ApprovalMinTimeout is the shortest time a request that waits for an
	// operator may give one; a shorter timeout or deadline is refused.
	ApprovalPolicy     string        `yaml:"approval_policy"`
	ApprovalTimeout    time.Duration `yaml:"approval_timeout"`
	ApprovalMinTimeout time.Duration `yaml:"approval_min_timeout"`
	ApprovalReminder   float64       `yaml:"approval_reminder"`
	// Alerts is the alert rules file (deploy/alerts.yaml). Webhooks
	// receive the operator-facing events (alerts_config.go);
	// WebhookSecret signs those with no secret of their own.
	Alerts        string           `yaml:"alerts"`
	Webhooks      []notify.Webhook `yaml:"webhooks"`
	WebhookSecret string           `yaml:"webhook_secret"`
}

func defaultConfig() fileConfig {
	return fileConfig{
		Listen:            "127.0.0.1:7420",
		DataDir:           "data",
		LogLevel:          "info",
		MetricsListen:     "127.0.0.1:9464",
		ConsoleListen:     "auto",
		ConsoleSessionTTL: 12 * time.Hour,
		TimeZone:          "Pacific/Auckland",
		DigestAt:          "08:00",
		ApprovalTimeout:   time.Hour,

		// Long enough for a person to read a card and answer it.
		ApprovalMinTimeout: 5 * time.Minute,

		ShutdownTimeout: 10 * time.Second,
		DefaultLease:    5 * time.Minute,
		RetryBase:       10 * time.Second,
		RetryMax:        10 * time.Minute,
		RescueInterval:  time.Second,
		// Generous: an agent makes a few calls a second; this stops a
		// runaway loop, not real work.
		RateLimit:         2000,
		RateBurst:         4000,
		AuditWindow:       access.DefaultAuditWindow,
		AuditRetention:    access.DefaultAuditRetention,
		AuthFailRate:      server.DefaultAuthFailRate,
		AuthFailBurst:     server.DefaultAuthFailBurst,
		HeartbeatInterval: 10 * time.Second,
		OfflineAfter:      5 * time.Minute,
		MaxAgentsPerHost:  fleet.DefaultMaxAgentsPerHost,
		MaxLeasesPerAgent: queue.DefaultMaxLeasesPerAgent,

		// Far above an honest fleet (a sidecar holds one stream, an
		// orchestrator a few), far below what starves everyone else.
		MaxStreamsPerToken:      server.DefaultMaxStreamsPerToken,
		MaxStreamsPerConnection: server.DefaultMaxStreamsPerConnection,
	}
}

func (c fileConfig) queueConfig() queue.Config {
	return queue.Config{DefaultLease: c.DefaultLease, RetryBase: c.RetryBase, RetryMax: c.RetryMax, RescueInterval: c.RescueInterval, MaxLeasesPerAgent: c.MaxLeasesPerAgent}
}

// consoleListen is the console's address for server.Config: "off" is
// empty, "auto" (or empty) a loopback address two ports after Listen's
// (port 0 stays 0), so the console never listens wider than asked. The
// port right after Listen's is the sidecar's spend endpoint (7421).
func (c fileConfig) consoleListen() (string, error) {
	v := strings.TrimSpace(c.ConsoleListen)
	switch {
	case strings.EqualFold(v, "off"):
		return "", nil
	case v != "" && !strings.EqualFold(v, "auto"):
		return v, nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("console-listen auto: --listen %q: %w", c.Listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p >= 65534 {
		return "", fmt.Errorf("console-listen auto: --listen %q has no numeric port; give --console-listen", c.Listen)
	}
	if p > 0 {
		p += 2
	}
	if !transport.IsLoopback(c.Listen) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// metricsListen is the metrics address for server.Config: "off" is empty.
func (c fileConfig) metricsListen() string {
	if strings.EqualFold(strings.TrimSpace(c.MetricsListen), "off") {
		return ""
	}
	return strings.TrimSpace(c.MetricsListen)
}

func (c fileConfig) serverTLS() transport.ServerTLS {
	return transport.ServerTLS{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA}
}

func (c fileConfig) streamLimits() server.StreamLimits {
	return server.StreamLimits{PerToken: c.MaxStreamsPerToken, PerConnection: c.MaxStreamsPerConnection}
}

func (c fileConfig) rateLimit() server.RateLimit {
	return server.RateLimit{PerSecond: c.RateLimit, Burst: c.RateBurst}
}

// errShowVersion is loadConfig's answer to --version: print it and exit 0.
var errShowVersion = errors.New("--version")

// loadConfig builds the configuration from args and the environment.
func loadConfig(args []string, getenv func(string) string) (fileConfig, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("factory-controlplane", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `factory-controlplane serves the factory's task queue over gRPC.

Usage: factory-controlplane [flags]
       factory-controlplane version

Every flag can also be set as FACTORY_<FLAG> in the environment (dashes
become underscores: FACTORY_DATA_DIR) or in the YAML file given by --config
(keys with underscores: data_dir). Flags win over the environment, the
environment over the file.

Security: with --tls-cert and --tls-key the server speaks TLS; adding
--tls-client-ca makes it mutual (every client needs a certificate signed by
that CA). Without TLS, plaintext is allowed only on a loopback address
(127.0.0.1, ::1, localhost) or with --insecure; otherwise the server refuses
to start.

Flags:
`)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", getenv("FACTORY_CONFIG"), "YAML config file")
	showVersion := fs.Bool("version", false, "print the version and exit (the version command adds how the binary was built)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address (port 0 picks one)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the SQLite database")
	fs.StringVar(&cfg.Store, "store", cfg.Store, "store: sqlite (DATA_DIR/factory.db), sqlite:PATH, or a postgres:// URL for replicas")
	fs.StringVar(&cfg.DebugListen, "debug-listen", cfg.DebugListen, "loopback address for Go's profiler (/debug/pprof/); off when empty")
	fs.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis for the live spend counters (redis://host:6379/0): dash:spend:daily:* as the runbook reads them; off when empty")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "address for Prometheus metrics (/metrics, /healthz); \"off\" or empty turns them off")
	fs.StringVar(&cfg.ConsoleListen, "console-listen", cfg.ConsoleListen, "address of the operator console (web UI): \"auto\" is loopback two ports after --listen's (7422; the port after is the sidecar's spend endpoint), \"off\" turns it off; same TLS and plaintext rules as --listen")
	fs.StringVar(&cfg.ConsoleURL, "console-url", cfg.ConsoleURL, "the console's address as operators reach it (https://factory.example:7422), for the links in approval cards; default: the address it listens on")
	fs.DurationVar(&cfg.ConsoleSessionTTL, "console-session-ttl", cfg.ConsoleSessionTTL, "how long a console sign-in lasts (never longer than the token it was made from)")
	fs.StringVar(&cfg.PostgresSchema, "pg-schema", cfg.PostgresSchema, "PostgreSQL schema for the tables (default public)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long running calls get to finish at shutdown")
	fs.DurationVar(&cfg.DefaultLease, "default-lease", cfg.DefaultLease, "lease length when a claim names none")
	fs.DurationVar(&cfg.RetryBase, "retry-base", cfg.RetryBase, "backoff after a task's first failed attempt (doubles each attempt)")
	fs.DurationVar(&cfg.RetryMax, "retry-max", cfg.RetryMax, "longest backoff between attempts")
	fs.DurationVar(&cfg.RescueInterval, "rescue-interval", cfg.RescueInterval, "how often expired leases are looked for")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "serve TLS with this certificate chain (PEM); needs --tls-key")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "the private key of --tls-cert (PEM)")
	fs.StringVar(&cfg.TLSClientCA, "tls-client-ca", cfg.TLSClientCA, "require client certificates signed by this CA (PEM): mutual TLS")
	fs.BoolVar(&cfg.Insecure, "insecure", cfg.Insecure, "allow plaintext on a non-loopback --listen address")
	fs.Float64Var(&cfg.RateLimit, "rate-limit", cfg.RateLimit, "requests per second each caller may make (0: no limit; health checks are exempt)")
	fs.IntVar(&cfg.RateBurst, "rate-burst", cfg.RateBurst, "requests a caller may make at once above --rate-limit")
	fs.DurationVar(&cfg.AuditWindow, "audit-window", cfg.AuditWindow, "identical refusals from one caller within this window share one audit entry with a count (negative: one entry per call)")
	fs.DurationVar(&cfg.AuditRetention, "audit-retention", cfg.AuditRetention, "delete audit entries last seen longer ago than this (0: keep forever)")
	fs.Float64Var(&cfg.AuthFailRate, "auth-fail-rate", cfg.AuthFailRate, "failed authentications per second each peer address may make before it gets RESOURCE_EXHAUSTED (0: no limit)")
	fs.IntVar(&cfg.AuthFailBurst, "auth-fail-burst", cfg.AuthFailBurst, "failed authentications a peer address may make at once above --auth-fail-rate")
	fs.IntVar(&cfg.MaxStreamsPerToken, "max-streams-per-token", cfg.MaxStreamsPerToken, "concurrent streams (watches, Connect, WaitApproval) one token may hold open on this replica; the next gets RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.MaxStreamsPerConnection, "max-streams-per-connection", cfg.MaxStreamsPerConnection, "concurrent streams one client connection may carry, whatever its tokens; the next gets RESOURCE_EXHAUSTED")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often sidecars are told to send heartbeats; two missed make a host STALE")
	fs.DurationVar(&cfg.OfflineAfter, "offline-after", cfg.OfflineAfter, "how long without a sign of life makes a host and its agents OFFLINE")
	fs.IntVar(&cfg.MaxAgentsPerHost, "max-agents-per-host", cfg.MaxAgentsPerHost, "the most agents one sidecar's Hello may declare; a Hello over it is refused (RESOURCE_EXHAUSTED)")
	fs.IntVar(&cfg.MaxLeasesPerAgent, "max-leases-per-agent", cfg.MaxLeasesPerAgent, "the most leases one agent may hold at once; a claim takes no more than the room left, and an agent at the cap is refused (RESOURCE_EXHAUSTED) until it completes, fails or loses some")
	fs.StringVar(&cfg.TimeZone, "time-zone", cfg.TimeZone, "IANA time zone spend days and budgets are counted in")
	fs.StringVar(&cfg.Prices, "prices", cfg.Prices, "price table (YAML, like deploy/prices.yaml) replacing the built-in one")
	fs.StringVar(&cfg.DigestAt, "digest-at", cfg.DigestAt, "local time (HH:MM in --time-zone) the morning digest goes to the webhooks; \"off\" sends none")
	fs.StringVar(&cfg.ApprovalPolicy, "approval-policy", cfg.ApprovalPolicy, "approval policy (YAML: auto_approve_max_tier, kind_tiers, kind_aliases, unknown_kind_tier, spend_kinds, spend_threshold_micros, spend_tier, reminder_fraction); the runbook's defaults when empty")
	fs.DurationVar(&cfg.ApprovalTimeout, "approval-timeout", cfg.ApprovalTimeout, "deadline of an approval request that names none; then its default (deny unless stated) applies")
	fs.DurationVar(&cfg.ApprovalMinTimeout, "approval-min-timeout", cfg.ApprovalMinTimeout, "shortest timeout (or time to a deadline) an approval request that waits for an operator may ask for; a shorter one is refused with INVALID_ARGUMENT (at most --approval-timeout)")
	fs.Float64Var(&cfg.ApprovalReminder, "approval-reminder", cfg.ApprovalReminder, "send a reminder once this fraction of a request's time has passed (0: the policy's, 0.5 by default)")
	webhookURLs := alertFlags(fs, &cfg)
	backupFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	// Before the file and the environment are read: a bad setting there
	// must not keep anyone from learning which binary this is.
	if *showVersion {
		return cfg, errShowVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Re-apply in precedence order: file, then environment, then the flags
	// that were given explicitly.
	merged := defaultConfig()
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&merged); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", *configPath, err)
		}
	}
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || f.Name == "webhook" || f.Name == "version" {
			return
		}
		env := "FACTORY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := getenv(env)
		if set[f.Name] {
			v = f.Value.String()
		} else if v == "" {
			v = fieldString(merged, f.Name)
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", env, v, err))
		}
	})
	if len(errs) > 0 {
		return cfg, fmt.Errorf("bad setting: %s", strings.Join(errs, "; "))
	}
	cfg.Webhooks = webhooksOf(merged.Webhooks, *webhookURLs, getenv("FACTORY_WEBHOOK"))
	return cfg, nil
}

// fieldString renders the file value of a flag, so it can be applied with
// the flag's own parser.
func fieldString(c fileConfig, flagName string) string {
	switch flagName {
	case "listen":
		return c.Listen
	case "data-dir":
		return c.DataDir
	case "store":
		return c.Store
	case "pg-schema":
		return c.PostgresSchema
	case "debug-listen":
		return c.DebugListen
	case "metrics-listen":
		return c.MetricsListen
	case "console-listen":
		return c.ConsoleListen
	case "console-url":
		return c.ConsoleURL
	case "console-session-ttl":
		return c.ConsoleSessionTTL.String()
	case "redis-url":
		return c.RedisURL
	case "log-level":
		return c.LogLevel
	case "shutdown-timeout":
		return c.ShutdownTimeout.String()
	case "default-lease":
		return c.DefaultLease.String()
	case "retry-base":
		return c.RetryBase.String()
	case "retry-max":
		return c.RetryMax.String()
	case "rescue-interval":
		return c.RescueInterval.String()
	case "tls-cert":
		return c.TLSCert
	case "tls-key":
		return c.TLSKey
	case "tls-client-ca":
		return c.TLSClientCA
	case "insecure":
		return strconv.FormatBool(c.Insecure)
	case "rate-limit":
		return strconv.FormatFloat(c.RateLimit, 'g', -1, 64)
	case "rate-burst":
		return strconv.Itoa(c.RateBurst)
	case "audit-window":
		return c.AuditWindow.String()
	case "audit-retention":
		return c.AuditRetention.String()
	case "backup-dir":
		return c.BackupDir
	case "backup-every":
		return c.BackupEvery.String()
	case "backup-keep":
		return c.BackupKeep
	case "vacuum-every":
		return c.VacuumEvery.String()
	case "auth-fail-rate":
		return strconv.FormatFloat(c.AuthFailRate, 'g', -1, 64)
	case "auth-fail-burst":
		return strconv.Itoa(c.AuthFailBurst)
	case "max-streams-per-token":
		return strconv.Itoa(c.MaxStreamsPerToken)
	case "max-streams-per-connection":
		return strconv.Itoa(c.MaxStreamsPerConnection)
	case "heartbeat-interval":
		return c.HeartbeatInterval.String()
	case "offline-after":
		return c.OfflineAfter.String()
	case "max-agents-per-host":
		return strconv.Itoa(c.MaxAgentsPerHost)
	case "max-leases-per-agent":
		return strconv.Itoa(c.MaxLeasesPerAgent)
	case "time-zone":
		return c.TimeZone
	case "prices":
		return c.Prices
	case "digest-at":
		return c.DigestAt
	case "approval-policy":
		return c.ApprovalPolicy
	case "approval-timeout":
		return c.ApprovalTimeout.String()
	case "approval-min-timeout":
		return c.ApprovalMinTimeout.String()
	case "approval-reminder":
		return strconv.FormatFloat(c.ApprovalReminder, 'g', -1, 64)
	case "alerts":
		return c.Alerts
	case "webhook-secret":
		return c.WebhookSecret
	}
	return ""
}
