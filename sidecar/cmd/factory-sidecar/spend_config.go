package main

import (
	"fmt"
	"net/url"
	"time"
)

// spendConfig is the config file's spend: section, the LiteLLM poller:
//
//	spend:
//	  litellm:
//	    url: http://127.0.0.1:4000
//	    interval: 30s
//
// Flags and environment variables win over it (--litellm-url or
// FACTORY_LITELLM_URL, --litellm-interval). The key is never read from the
// file: it is FACTORY_LITELLM_KEY (systemd's EnvironmentFile) or
// --litellm-key.
type spendConfig struct {
	LiteLLM struct {
		// URL is the LiteLLM proxy whose /spend/logs/v2 is polled; empty
		// leaves the poller off.
		URL string `yaml:"url"`
		// Interval is the time between polls (default 30s).
		Interval time.Duration `yaml:"interval"`
	} `yaml:"litellm"`
}

// check refuses a poller setting that could only fail later.
func (c spendConfig) check() error {
	if u := c.LiteLLM.URL; u != "" {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("spend.litellm.url %q: want an http(s) URL such as http://127.0.0.1:4000", u)
		}
	}
	if c.LiteLLM.Interval < 0 {
		return fmt.Errorf("spend.litellm.interval %s: must not be negative", c.LiteLLM.Interval)
	}
	return nil
}

// withConfig fills the LiteLLM poller's settings that the flags and the
// environment left unset from the config file.
func (o spendOptions) withConfig(c spendConfig) spendOptions {
	if o.litellmURL == "" {
		o.litellmURL = c.LiteLLM.URL
	}
	if o.litellmInterval == 0 {
		o.litellmInterval = c.LiteLLM.Interval
	}
	return o
}
