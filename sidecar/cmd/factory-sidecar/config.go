package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/factory/factory/sidecar/logwatch"
	"github.com/factory/factory/sidecar/probe"
	"github.com/factory/factory/sidecar/swapwatch"
)

// config is the sidecar's YAML file (--config / FACTORY_SIDECAR_CONFIG). Every
// part is optional: with no file the sidecar reads the GPU and the root
// filesystem and probes nothing.
type config struct {
	// Host is the name this sidecar registers as; the host name by default.
	Host string `yaml:"host"`
	// Labels are free-form key/values shown by `factory nodes`.
	Labels map[string]string `yaml:"labels"`
	// GPU turns the NVML collector off for hosts that must not load it.
	GPU struct {
		Disabled bool `yaml:"disabled"`
	} `yaml:"gpu"`
	// Agents are the agents this host runs. A pid (or a pid file) lets the
	// GPU collector name the agent that owns a GPU process.
	Agents []agentConfig `yaml:"agents"`
	// Disk lists the filesystems to report (statfs of each path).
	Disk struct {
		Paths []string `yaml:"paths"`
	} `yaml:"disk"`
	// Probes are the local services to check each interval.
	Probes []probe.Spec `yaml:"probes"`
	// LogWatch counts pattern matches in logs (the model-swap rate).
	LogWatch []logwatch.Spec `yaml:"log_watch"`
	// SwapWatch detects model swaps from inference servers' APIs.
	SwapWatch []swapwatch.Spec `yaml:"swap_watch"`
	// Spool is where events wait until the control plane acks them.
	Spool struct {
		// Path is the spool file (default $STATE_DIRECTORY/events.jsonl,
		// else ~/.local/state/factory-sidecar/events.jsonl).
		Path string `yaml:"path"`
	} `yaml:"spool"`
	// Spend is the spend collector's LiteLLM poller (spend_config.go).
	Spend spendConfig `yaml:"spend"`
}

type agentConfig struct {
	Name         string   `yaml:"name"`
	Role         string   `yaml:"role"`
	Capabilities []string `yaml:"capabilities"`
	PID          int      `yaml:"pid"`
	PIDFile      string   `yaml:"pid_file"`
	// RestartCommand is run by `sh -c` when an operator restarts this
	// agent (`factory agents restart NAME`), e.g. "systemctl restart
	// forge"; without one the agent cannot be restarted from the control
	// plane.
	RestartCommand string `yaml:"restart_command"`
	// RestartTimeout bounds RestartCommand (default 30s): a hung script
	// must not hold the command forever.
	RestartTimeout time.Duration `yaml:"restart_timeout"`
}

func loadSidecarConfig(path string) (config, error) {
	var cfg config
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true) // a misspelt key must not silently drop a probe
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("%s: %w", path, err)
		}
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return cfg, err
		}
		cfg.Host = h
	}
	if len(cfg.Disk.Paths) == 0 {
		cfg.Disk.Paths = []string{"/"}
	}
	if err := cfg.Spend.check(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// agentPIDs maps each known agent pid to its name. A pid file that cannot be
// read is skipped: the agent may simply not be running yet.
func (c config) agentPIDs() map[uint32]string {
	m := map[uint32]string{}
	for _, a := range c.Agents {
		pid := a.PID
		if a.PIDFile != "" {
			if raw, err := os.ReadFile(a.PIDFile); err == nil {
				if n, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
					pid = n
				}
			}
		}
		if pid > 0 {
			m[uint32(pid)] = a.Name
		}
	}
	return m
}
