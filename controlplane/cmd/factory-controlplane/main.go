// Command factory-controlplane serves the factory's control plane: the task
// queue over gRPC, on an embedded SQLite database.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/telemetry"
)

func main() {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "factory-controlplane:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "version" {
		if len(args) > 1 {
			return fmt.Errorf("version takes no arguments, got %s", strings.Join(args[1:], " "))
		}
		fmt.Printf("factory-controlplane version %s\n", telemetry.VersionInfo())
		return nil
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], os.Getenv)
	}
	cfg, err := loadConfig(args, os.Getenv)
	if errors.Is(err, errShowVersion) {
		fmt.Printf("factory-controlplane version %s\n", telemetry.Version())
		return nil
	}
	if err != nil {
		return err
	}
	level, err := telemetry.ParseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(os.Stderr, level)
	tp, shutdown, err := telemetry.Setup(ctx, "factory-controlplane")
	if err != nil {
		return err
	}
	defer func() {
		if err := shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("trace flush failed", "err", err)
		}
	}()
	warnWideDataDir(cfg.DataDir, log)
	consoleListen, err := cfg.consoleListen()
	if err != nil {
		return err
	}
	backup, err := cfg.backupConfig()
	if err != nil {
		return err
	}
	return server.Run(ctx, server.Config{
		Console: server.ConsoleConfig{Listen: consoleListen, URL: cfg.ConsoleURL, SessionTTL: cfg.ConsoleSessionTTL,
			OnListening: func(url, signIn string) { announceConsole(cfg.DataDir, url, signIn, log) }},
		Listen:          cfg.Listen,
		DataDir:         cfg.DataDir,
		Store:           cfg.Store,
		PostgresSchema:  cfg.PostgresSchema,
		DebugListen:     cfg.DebugListen,
		MetricsListen:   cfg.metricsListen(),
		RedisURL:        cfg.RedisURL,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Queue:           cfg.queueConfig(),
		TLS:             cfg.serverTLS(),
		Insecure:        cfg.Insecure,
		RateLimit:       cfg.rateLimit(),
		Streams:         cfg.streamLimits(),
		Audit:           server.AuditConfig{Window: cfg.AuditWindow, Retention: cfg.AuditRetention},
		Backup:          backup,
		AuthFailLimit:   server.AuthFailLimit{PerSecond: cfg.AuthFailRate, Burst: cfg.AuthFailBurst},
		Fleet:           fleet.Config{HeartbeatInterval: cfg.HeartbeatInterval, OfflineAfter: cfg.OfflineAfter, MaxAgentsPerHost: cfg.MaxAgentsPerHost},
		Budget:          server.BudgetConfig{TimeZone: cfg.TimeZone, PricesFile: cfg.Prices},
		Digest:          server.DigestConfig{TimeZone: cfg.TimeZone, At: cfg.DigestAt},
		Approvals:       server.ApprovalConfig{PolicyFile: cfg.ApprovalPolicy, DefaultTimeout: cfg.ApprovalTimeout, MinTimeout: cfg.ApprovalMinTimeout, ReminderFraction: cfg.ApprovalReminder},
		Notify:          server.NotifyConfig{Webhooks: cfg.Webhooks, WebhookSecret: cfg.WebhookSecret},
		Alerts:          server.AlertsConfig{File: cfg.Alerts},
		Logger:          log,
		TracerProvider:  tp,
	})
}
