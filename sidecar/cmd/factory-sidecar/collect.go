package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/factory/factory/sidecar/disk"
	"github.com/factory/factory/sidecar/gpu"
	"github.com/factory/factory/sidecar/hoststat"
	"github.com/factory/factory/sidecar/probe"
)

// readings is one pass of every collector, as `--once -o json` prints it.
type readings struct {
	Host        string         `json:"host"`
	CollectedAt time.Time      `json:"collected_at"`
	GPU         gpu.Snapshot   `json:"gpu"`
	Disk        []disk.Usage   `json:"disk"`
	Probes      []probe.Result `json:"probes"`
	// HostStat is the host's CPU, memory, load and network.
	HostStat hoststat.Reading `json:"host_stat"`
	// Took is how long each collector took, by collector name.
	Took map[string]gpu.Duration `json:"took"`
}

// collectors holds the sidecar's collectors for its whole life, so NVML is
// initialised once and not per reading.
type collectors struct {
	cfg  config
	gpu  *gpu.Collector
	host *hoststat.Collector
}

func newCollectors(cfg config, log *slog.Logger) *collectors {
	c := &collectors{cfg: cfg, host: hoststat.New("")}
	if !cfg.GPU.Disabled {
		c.gpu = gpu.New(nvml.New(), gpu.Options{Logger: log, AgentPIDs: cfg.agentPIDs()})
	}
	return c
}

func (c *collectors) close() {
	if c.gpu != nil {
		c.gpu.Close()
	}
}

func (c *collectors) collect(ctx context.Context) readings {
	r := readings{Host: c.cfg.Host, CollectedAt: time.Now().UTC(), Took: map[string]gpu.Duration{}}
	timed := func(name string, f func()) {
		start := time.Now()
		f()
		r.Took[name] = gpu.Duration(time.Since(start))
	}
	if c.gpu != nil {
		timed("gpu", func() { r.GPU = c.gpu.Collect() })
	} else {
		r.GPU = gpu.Snapshot{Reason: "GPU collector disabled in config", Devices: []gpu.Device{}}
	}
	timed("disk", func() { r.Disk = disk.Collect(c.cfg.Disk.Paths) })
	timed("probes", func() { r.Probes = probe.RunAll(ctx, c.cfg.Probes) })
	timed("host", func() { r.HostStat = c.host.Collect() })
	return r
}

// collectOnce runs every collector samples times (the first GPU pass pays for
// NVML's init; later ones show the steady cost) and prints the readings. It
// needs no control plane: it is the check to run on a new GPU host.
func collectOnce(ctx context.Context, cfg config, log *slog.Logger, w io.Writer, format string, samples int, requireGPU bool) error {
	c := newCollectors(cfg, log)
	defer c.close()
	var all []readings
	for range max(samples, 1) {
		all = append(all, c.collect(ctx))
	}
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"samples": all}); err != nil {
			return err
		}
	case "text":
		for _, r := range all {
			printText(w, r)
		}
	default:
		return fmt.Errorf("-o %q: want json or text", format)
	}
	// The last pass decides, as the steady state after NVML's init: a
	// cron job gets status 1 and the failures on stderr.
	last := all[len(all)-1]
	failed := last.failures()
	if requireGPU && !last.GPU.Available {
		failed = append(failed, "--require-gpu: "+last.GPU.Reason)
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("check failed: %s", failed[0])
	}
	return fmt.Errorf("%d checks failed:\n  %s", len(failed), strings.Join(failed, "\n  "))
}

// failures names every probe, disk and GPU check of r that failed. A host
// without a GPU is not one (that takes --require-gpu); NVML failing where
// it is installed is.
func (r readings) failures() []string {
	var out []string
	for _, p := range r.Probes {
		if !p.OK {
			out = append(out, fmt.Sprintf("probe %s (%s %s): %s", p.Name, p.Kind, p.Target, p.Detail))
		}
	}
	for _, d := range r.Disk {
		if d.Error != "" {
			out = append(out, fmt.Sprintf("disk %s: %s", d.Path, d.Error))
		}
	}
	// A broken driver is a failure, unlike a host without the library.
	if r.GPU.NVMLError != "" {
		out = append(out, "gpu: NVML failing: "+r.GPU.NVMLError)
	}
	for _, d := range r.GPU.Devices {
		if d.Error != "" {
			out = append(out, fmt.Sprintf("gpu %d: %s", d.Index, d.Error))
		}
	}
	return out
}

func printText(w io.Writer, r readings) {
	fmt.Fprintf(w, "host %s at %s\n", r.Host, r.CollectedAt.Format(time.RFC3339))
	g := r.GPU
	if !g.Available {
		fmt.Fprintf(w, "  gpu: %s (took %s)\n", g.Reason, time.Duration(r.Took["gpu"]))
	} else {
		fmt.Fprintf(w, "  gpu: driver %s, NVML %s, CUDA %d, %d device(s), took %s\n", g.DriverVersion, g.NVMLVersion, g.CUDAVersion, len(g.Devices), time.Duration(r.Took["gpu"]))
	}
	for _, d := range g.Devices {
		fmt.Fprintf(w, "  [%d] %s %s: mem used %d / reserved %d / total %d MiB (%s), util %d%%, mem util %d%%, %d°C, %.1f/%.1f W, clocks %d/%d MHz, %d process(es), took %s\n",
			d.Index, d.Name, d.UUID, d.Memory.UsedBytes>>20, d.Memory.ReservedBytes>>20, d.Memory.TotalBytes>>20, d.Memory.Version,
			d.UtilGPU, d.UtilMemory, d.TemperatureC, float64(d.PowerMilliwatts)/1000, float64(d.PowerLimitMilliwatts)/1000,
			d.SMClockMHz, d.MemClockMHz, len(d.Processes), time.Duration(d.Took))
		for _, p := range d.Processes {
			fmt.Fprintf(w, "      pid %d %d MiB %s\n", p.PID, p.UsedMemoryBytes>>20, p.Agent)
		}
		for call, code := range d.Calls {
			if code != nvml.SUCCESS.Error() {
				fmt.Fprintf(w, "      %s: %s\n", call, code)
			}
		}
	}
	for _, e := range g.Events {
		fmt.Fprintf(w, "  event %s %d on %s\n", e.Type, e.Data, e.DeviceUUID)
	}
	for _, d := range r.Disk {
		if d.Error != "" {
			fmt.Fprintf(w, "  disk %s: %s\n", d.Path, d.Error)
			continue
		}
		fmt.Fprintf(w, "  disk %s: %.1f%% used, %d GiB available of %d GiB\n", d.Path, d.UsedPercent, d.AvailableBytes>>30, d.TotalBytes>>30)
	}
	for _, p := range r.Probes {
		mark := "✅"
		if !p.OK {
			mark = "❌"
		}
		fmt.Fprintf(w, "  %s %s (%s %s): %s in %s\n", mark, p.Name, p.Kind, p.Target, p.Detail, p.Latency.Round(time.Microsecond))
	}
	if h := r.HostStat; h.Error != "" {
		fmt.Fprintf(w, "  host: %s\n", h.Error)
	} else {
		cpu := "n/a (needs an earlier reading)"
		if h.CPUUsage != nil {
			cpu = fmt.Sprintf("%.1f%%", *h.CPUUsage*100)
		}
		fmt.Fprintf(w, "  host: cpu %s, memory %d / %d MiB used, load %.2f %.2f %.2f, %d network device(s)\n",
			cpu, h.MemoryUsedBytes>>20, h.MemoryTotalBytes>>20, h.Load1, h.Load5, h.Load15, len(h.Networks))
	}
}
