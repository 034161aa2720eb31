package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/transport"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spend"
	"github.com/factory/factory/sidecar/spool"
)

// spendOptions are the spend collector's flags.
type spendOptions struct {
	// listen is the loopback address of the agents' endpoint; "" or "off"
	// turns it off.
	listen string
	// litellmURL turns the LiteLLM poller on; litellmKey is its master or
	// admin key.
	litellmURL, litellmKey string
	litellmInterval        time.Duration
	// secret (else secretFile's content, else FACTORY_SPEND_SECRET), when
	// set, is required on every request to the endpoint.
	secret, secretFile string
	// pricesFile is the price table the endpoint checks reports without a
	// cost against; "" is the built-in one, as on the control plane.
	pricesFile string
}

// spendSecret is the endpoint's secret: --spend-secret, else the file
// --spend-secret-file names, else FACTORY_SPEND_SECRET (read here, not as
// a flag default, so --help never prints it). "" means none.
func (o spendOptions) spendSecret() (string, error) {
	switch {
	case o.secret != "":
		return o.secret, nil
	case o.secretFile != "":
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return "", fmt.Errorf("--spend-secret-file: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("--spend-secret-file %s is empty", o.secretFile)
		}
		return s, nil
	}
	return strings.TrimSpace(os.Getenv("FACTORY_SPEND_SECRET")), nil
}

func (o spendOptions) enabled() bool {
	return (o.listen != "" && o.listen != "off") || o.litellmURL != ""
}

// spendSpoolPath keeps spend events beside the fleet events' spool, in a
// file of their own: they go to another RPC.
func (c config) spendSpoolPath() (string, error) {
	p, err := c.spoolPath()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(p), "spend.jsonl"), nil
}

// startSpend opens the spend spool and starts the endpoint, the LiteLLM
// poller and the relay. The endpoint it returns (nil when off) takes the
// emergency stop the stream hears. A spend source that cannot start is
// logged, not fatal: heartbeats and telemetry matter more than one
// collector.
func startSpend(ctx context.Context, cfg config, opts spendOptions, conn grpc.ClientConnInterface, callOpts []grpc.CallOption, log *slog.Logger) (*spend.Endpoint, func(), error) {
	if !opts.enabled() {
		return nil, func() {}, nil
	}
	// The endpoint's settings are read before anything is opened, so a bad
	// one leaves nothing to undo.
	endpoint := opts.listen != "" && opts.listen != "off"
	var (
		secret string
		prices *budget.Prices
		err    error
	)
	if endpoint {
		if secret, err = opts.spendSecret(); err != nil {
			return nil, nil, err
		}
		if opts.pricesFile != "" {
			if prices, err = budget.LoadPrices(opts.pricesFile); err != nil {
				return nil, nil, err
			}
		}
	}
	path, err := cfg.spendSpoolPath()
	if err != nil {
		return nil, nil, err
	}
	sp, err := spool.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if sp.Skipped > 0 {
		log.Warn("spend spool: skipped unreadable lines (a write cut short by a crash or a full disk)", "path", path, "lines", sp.Skipped)
	}
	var agents []string
	for _, a := range cfg.Agents {
		agents = append(agents, a.Name)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ep *spend.Endpoint
	var srv *http.Server
	if endpoint {
		ep = &spend.Endpoint{Spool: sp, Host: cfg.Host, Agents: agents, Prices: prices, Secret: secret, Logger: log}
		lis, err := listenLoopback(opts.listen)
		if err != nil {
			log.Error("spend endpoint not started: agents cannot report spend through this sidecar", "listen", opts.listen, "err", err)
		} else {
			srv = &http.Server{Handler: ep.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
			log.Info("spend endpoint listening", "addr", lis.Addr().String(), "secret_required", secret != "")
			wg.Go(func() {
				if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("spend endpoint stopped", "err", err)
				}
			})
		}
	}
	if opts.litellmURL != "" {
		poller, err := spend.NewLiteLLM(spend.LiteLLMConfig{URL: opts.litellmURL, Key: opts.litellmKey, Spool: sp,
			CursorPath: filepath.Join(filepath.Dir(path), "litellm-cursor.json"), Host: cfg.Host, Agents: agents,
			Interval: opts.litellmInterval, Logger: log})
		if err != nil {
			cancel()
			if srv != nil {
				srv.Close()
			}
			wg.Wait()
			sp.Close()
			return nil, nil, err
		}
		wg.Go(func() { _ = poller.Run(ctx) })
	}
	relay, err := spend.NewRelay(spend.RelayConfig{Conn: conn, CallOptions: callOpts, Spool: sp, Logger: log})
	if err != nil {
		cancel()
		sp.Close()
		return nil, nil, err
	}
	wg.Go(func() { _ = relay.Run(ctx) })
	return ep, func() {
		cancel()
		if srv != nil {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			_ = srv.Shutdown(sctx)
			c()
		}
		wg.Wait()
		sp.Close()
	}, nil
}

// listenLoopback listens on addr, which must be a loopback address: the
// endpoint takes reports without a token.
func listenLoopback(addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, err
	}
	if err := transport.CheckLoopback(addr); err != nil {
		return nil, fmt.Errorf("--spend-listen %s: must be a loopback address (127.0.0.1, ::1, localhost): the endpoint takes reports without a token (%v)", addr, err)
	}
	return net.Listen("tcp", addr)
}

// onEmergencyStop hands the stream's emergency stop to the endpoint.
func onEmergencyStop(ep *spend.Endpoint) func(*factoryv1.EmergencyStop) {
	if ep == nil {
		return nil
	}
	return func(es *factoryv1.EmergencyStop) { ep.SetEmergencyStop(es.GetStopped(), es.GetReason()) }
}

// litellmKey is --litellm-key, else FACTORY_LITELLM_KEY (read here, not as
// the flag's default, so --help never prints it).
func litellmKey(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv("FACTORY_LITELLM_KEY")
}
