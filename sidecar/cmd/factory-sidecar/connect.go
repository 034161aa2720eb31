package main

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/telemetry"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/stream"
)

// hello is what this sidecar says when it connects: its host and the
// agents the config declares.
func (c config) hello() *factoryv1.Hello {
	h := &factoryv1.Hello{Host: c.Host, Version: telemetry.Version(), Labels: c.Labels, Capabilities: []string{"disk", "probe"}}
	if !c.GPU.Disabled {
		h.Capabilities = append(h.Capabilities, "gpu")
	}
	pids := c.agentPIDs()
	for _, a := range c.Agents {
		ha := &factoryv1.HostedAgent{Name: a.Name}
		if a.Role != "" {
			ha.Roles = append(ha.Roles, a.Role)
		}
		for pid, name := range pids {
			if name == a.Name {
				ha.Pid = int32(pid)
			}
		}
		h.Agents = append(h.Agents, ha)
	}
	return h
}

// telemetryOf converts one pass of the collectors into the wire message.
func telemetryOf(r readings) *factoryv1.Telemetry {
	t := &factoryv1.Telemetry{CollectedAt: timestamppb.New(r.CollectedAt)}
	if !r.GPU.Available {
		t.GpuError = r.GPU.Reason
	}
	t.NvmlError = r.GPU.NVMLError
	for _, d := range r.GPU.Devices {
		g := &factoryv1.GpuDevice{
			Index: int32(d.Index), Name: d.Name, Uuid: d.UUID,
			MemoryUsedBytes: d.Memory.UsedBytes, MemoryReservedBytes: d.Memory.ReservedBytes, MemoryTotalBytes: d.Memory.TotalBytes,
			UtilizationPercent: d.UtilGPU, MemoryUtilizationPercent: d.UtilMemory, TemperatureCelsius: d.TemperatureC,
			PowerMilliwatts: d.PowerMilliwatts, PowerLimitMilliwatts: d.PowerLimitMilliwatts,
			SmClockMhz: d.SMClockMHz, MemoryClockMhz: d.MemClockMHz, Error: d.Error,
		}
		for _, p := range d.Processes {
			g.Processes = append(g.Processes, &factoryv1.GpuProcess{Pid: p.PID, UsedMemoryBytes: p.UsedMemoryBytes, Agent: p.Agent})
		}
		t.Gpus = append(t.Gpus, g)
	}
	for _, d := range r.Disk {
		t.Disks = append(t.Disks, &factoryv1.DiskUsage{Path: d.Path, TotalBytes: d.TotalBytes, UsedBytes: d.UsedBytes,
			AvailableBytes: d.AvailableBytes, Error: d.Error})
	}
	for _, p := range r.Probes {
		t.Probes = append(t.Probes, &factoryv1.ProbeResult{Name: p.Name, Kind: p.Kind, Target: p.Target, Ok: p.OK,
			Detail: p.Detail, Latency: durationpb.New(p.Latency)})
	}
	h := r.HostStat
	if h.MemoryTotalBytes > 0 || h.Error != "" {
		t.Host = &factoryv1.HostReading{CpuUsageRatio: h.CPUUsage, MemoryTotalBytes: h.MemoryTotalBytes, MemoryUsedBytes: h.MemoryUsedBytes,
			Load1: h.Load1, Load5: h.Load5, Load15: h.Load15, Error: h.Error}
		for i, n := range h.Networks {
			if i >= 256 {
				break
			}
			t.Host.Networks = append(t.Host.Networks, &factoryv1.HostNetworkDevice{Device: n.Device, ReceiveBytes: n.ReceiveBytes, TransmitBytes: n.TransmitBytes})
		}
	}
	return t
}

// streamConfig is the stream client of a running sidecar: Hello from the
// config, telemetry from the collectors.
func streamConfig(cfg config, c *collectors, log *slog.Logger) stream.Config {
	return stream.Config{
		Hello:     cfg.hello(),
		Collect:   func(ctx context.Context) *factoryv1.Telemetry { return telemetryOf(c.collect(ctx)) },
		Logger:    log,
		OnCommand: restarter(cfg.Agents, log),
	}
}
