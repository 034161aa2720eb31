package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/factory/factory/controlplane/transport"
)

// serveDebug serves Go's profiler on addr until ctx ends, /debug/fleet
// (the heartbeat latency histogram `factory bench fleet` reads) and
// /debug/process (the process's own CPU and memory counters, which
// `factory bench queue` and `bench fleet` divide by the work done). It
// exposes the process's internals, so it listens on loopback only.
func serveDebug(ctx context.Context, addr string, log *slog.Logger) error {
	if !transport.IsLoopback(addr) {
		return fmt.Errorf("debug listener %s: loopback addresses only (it serves the profiler)", addr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/fleet", serveFleetDebug)
	mux.HandleFunc("/debug/process", serveProcessDebug)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("debug listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("debug listener", "addr", lis.Addr().String())
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
