// Package gpu collects per-device GPU readings through NVML (go-nvml), behind
// nvml.Interface so that tests can drive it with go-nvml's mock package or with
// readings recorded on a real machine.
//
// A host without the NVIDIA library or without a GPU is normal for an agent
// workspace: the collector says "no GPU" once and then reports empty snapshots
// instead of failing, so the rest of the sidecar runs on.
package gpu

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Snapshot is one collection over every device of the host.
type Snapshot struct {
	// Available is false when NVML could not be loaded or there is no GPU.
	Available bool `json:"available"`
	// Reason says why Available is false ("no GPU: ...").
	Reason string `json:"reason,omitempty"`
	// NVMLError is set when NVML is installed but fails (init other than
	// "library not found", the device count, every device handle): a
	// broken or mismatched driver, not a host without a GPU. It is a
	// failing GPU check, where a host with no NVIDIA library is not.
	NVMLError string `json:"nvml_error,omitempty"`
	// Init is NVML's return code for nvmlInit, as NVML spells it.
	Init          string   `json:"init,omitempty"`
	DriverVersion string   `json:"driver_version,omitempty"`
	NVMLVersion   string   `json:"nvml_version,omitempty"`
	CUDAVersion   int      `json:"cuda_version,omitempty"`
	Devices       []Device `json:"devices"`
	// Events are the XID and ECC events NVML delivered since the last
	// collection (the event set is drained without blocking).
	Events []Event `json:"events,omitempty"`
	// Calls holds the return code of each host-level call (count, versions,
	// event set), so a failing call is visible rather than a silent zero.
	Calls map[string]string `json:"calls,omitempty"`
	// Took is how long the whole collection took.
	Took Duration `json:"took"`
}

// Device is the reading of one GPU.
type Device struct {
	Index      int    `json:"index"`
	Name       string `json:"name"`
	UUID       string `json:"uuid"`
	Memory     Memory `json:"memory"`
	UtilGPU    uint32 `json:"util_gpu_percent"`
	UtilMemory uint32 `json:"util_memory_percent"`
	// TemperatureC is the GPU core temperature in degrees Celsius.
	TemperatureC uint32 `json:"temperature_c"`
	// PowerMilliwatts is the current draw; PowerLimitMilliwatts the enforced cap.
	PowerMilliwatts      uint32    `json:"power_mw"`
	PowerLimitMilliwatts uint32    `json:"power_limit_mw"`
	SMClockMHz           uint32    `json:"sm_clock_mhz"`
	MemClockMHz          uint32    `json:"mem_clock_mhz"`
	Processes            []Process `json:"processes"`
	// Calls holds NVML's return code for every call made for this device,
	// keyed like the recorded fixtures ("mem_v2", "util", "procs", ...).
	Calls map[string]string `json:"calls"`
	// Error is set when the device's readings failed: its memory could
	// not be read at all, or NVML says the GPU is lost.
	Error string `json:"error,omitempty"`
	// Took is how long this device's collection took.
	Took Duration `json:"took"`
}

// Memory is the device's framebuffer memory in bytes.
//
// With the v2 call NVML splits what v1 reports as Used into Reserved (the
// driver's own allocation, present on an idle GPU) and Used (what processes
// allocated): on an idle H100, v1 says 480 MiB used while v2 says 0 used and
// 480 MiB reserved. Used here is always the v2 meaning when v2 answered.
type Memory struct {
	TotalBytes    uint64 `json:"total_bytes"`
	UsedBytes     uint64 `json:"used_bytes"`
	ReservedBytes uint64 `json:"reserved_bytes"`
	FreeBytes     uint64 `json:"free_bytes"`
	// Version is "v2", or "v1" when the driver does not support v2 (then
	// ReservedBytes is 0 and UsedBytes includes the driver's reservation).
	Version string `json:"version,omitempty"`
}

// Process is one compute process running on a device.
type Process struct {
	PID             uint32 `json:"pid"`
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	// Agent is the hosted agent whose pid this is, when the config knows it.
	Agent string `json:"agent,omitempty"`
}

// Event is one XID or ECC event.
type Event struct {
	DeviceUUID string `json:"device_uuid,omitempty"`
	// Type is "xid", "ecc_single_bit" or "ecc_double_bit".
	Type string `json:"type"`
	// Data is the event's payload: the XID number for XID events.
	Data uint64 `json:"data"`
}

// Duration marshals as a Go duration string and its microseconds, which is
// what a person reading `gpu-check` output and a script comparing runs need.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"text":%q,"us":%d}`, time.Duration(d).String(), time.Duration(d).Microseconds()), nil
}

// UnmarshalJSON implements json.Unmarshaler, reading what MarshalJSON wrote.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v struct {
		US int64 `json:"us"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*d = Duration(time.Duration(v.US) * time.Microsecond)
	return nil
}

// eventMask is what the collector subscribes to: XID errors and ECC errors
// are what an operator must see; the other event types are noise for a fleet.
const eventMask = nvml.EventTypeXidCriticalError | nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError

// Options configures a Collector.
type Options struct {
	// Logger receives the one-time "no GPU" line and event-set warnings.
	Logger *slog.Logger
	// AgentPIDs maps a process id to the hosted agent that runs it.
	AgentPIDs map[uint32]string
	// EventWait bounds how long one collection waits on the event set. Zero
	// (the default) only takes what is already pending: on an H100 a 1 ms
	// wait was 95% of a collection's cost, and a missed event is delivered
	// by the next collection anyway.
	EventWait time.Duration
	// MaxEvents caps the events drained per collection, so an event storm
	// cannot keep one collection busy.
	MaxEvents int
}

// Collector reads every GPU of the host through NVML. It is safe for
// concurrent use; collections are serialised.
type Collector struct {
	lib  nvml.Interface
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	started  bool
	noGPU    string // non-empty: why there is no GPU; collections are empty
	nvmlErr  string // NVML is there but fails; "" when it works or is absent
	initRet  nvml.Return
	devices  []nvml.Device
	events   nvml.EventSet
	hostInfo Snapshot // versions and host-level call codes, fixed at start
}

// New returns a collector over lib (nvml.New() in production).
func New(lib nvml.Interface, opts Options) *Collector {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = 64
	}
	return &Collector{lib: lib, opts: opts, log: opts.Logger}
}

// SetAgentPIDs replaces the pid → agent map, for a config reload.
func (c *Collector) SetAgentPIDs(m map[uint32]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts.AgentPIDs = m
}

// ErrNoGPU is returned by Start when the host has no usable GPU. It is
// informational: Collect keeps working and reports Available=false.
var ErrNoGPU = errors.New("no GPU")

// Start initialises NVML, finds the devices and registers for events. It is
// called by the first Collect when not called before.
func (c *Collector) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked()
}

func (c *Collector) startLocked() error {
	if c.started {
		if c.noGPU != "" {
			return fmt.Errorf("%w: %s", ErrNoGPU, c.noGPU)
		}
		return nil
	}
	c.started = true
	calls := map[string]string{}
	var ret nvml.Return
	if perr := guard(func() { ret = c.lib.Init() }); perr != nil {
		ret = nvml.ERROR_UNKNOWN
		calls["init_panic"] = perr.Error()
	}
	c.initRet = ret
	c.hostInfo.Init = retString(ret)
	if ret != nvml.SUCCESS {
		// ERROR_LIBRARY_NOT_FOUND: no driver here. Any other failure (driver
		// and library mismatch, no permission) is reported the same way, as
		// the host still runs agents without a GPU.
		reason := fmt.Sprintf("NVML init: %s", retString(ret))
		if ret != nvml.ERROR_LIBRARY_NOT_FOUND {
			c.nvmlErr = reason
		}
		return c.setNoGPU(reason, calls)
	}
	call(calls, "driver", func() nvml.Return {
		var r nvml.Return
		c.hostInfo.DriverVersion, r = c.lib.SystemGetDriverVersion()
		return r
	})
	call(calls, "nvml", func() nvml.Return {
		var r nvml.Return
		c.hostInfo.NVMLVersion, r = c.lib.SystemGetNVMLVersion()
		return r
	})
	call(calls, "cuda", func() nvml.Return {
		var r nvml.Return
		c.hostInfo.CUDAVersion, r = c.lib.SystemGetCudaDriverVersion()
		return r
	})
	var count int
	if r := call(calls, "count", func() nvml.Return {
		var r nvml.Return
		count, r = c.lib.DeviceGetCount()
		return r
	}); r != nvml.SUCCESS || count == 0 {
		reason := "no device"
		if r != nvml.SUCCESS {
			reason = "device count: " + retString(r)
			c.nvmlErr = reason
		}
		return c.setNoGPU(reason, calls)
	}
	for i := range count {
		var d nvml.Device
		if r := call(calls, fmt.Sprintf("handle_%d", i), func() nvml.Return {
			var r nvml.Return
			d, r = c.lib.DeviceGetHandleByIndex(i)
			return r
		}); r == nvml.SUCCESS && d != nil {
			c.devices = append(c.devices, d)
		}
	}
	if len(c.devices) == 0 {
		c.nvmlErr = fmt.Sprintf("no handle for any of %d device(s)", count)
		return c.setNoGPU(c.nvmlErr, calls)
	}
	// Events are best effort: some devices (and every mock) do not support
	// them, and readings matter more than events.
	if r := call(calls, "eventset", func() nvml.Return {
		var r nvml.Return
		c.events, r = c.lib.EventSetCreate()
		return r
	}); r == nvml.SUCCESS && c.events != nil {
		registered := 0
		for i, d := range c.devices {
			if call(calls, fmt.Sprintf("register_events_%d", i), func() nvml.Return {
				return d.RegisterEvents(eventMask, c.events)
			}) == nvml.SUCCESS {
				registered++
			}
		}
		if registered == 0 {
			_ = guard(func() { c.events.Free() })
			c.events = nil
		}
	} else {
		c.events = nil
	}
	c.hostInfo.Calls = calls
	return nil
}

func (c *Collector) setNoGPU(reason string, calls map[string]string) error {
	c.noGPU = reason
	c.hostInfo.Calls = calls
	// Said once: the collector is asked every interval and a GPU-less host
	// must not fill its journal with the same line.
	c.log.Info("no GPU", "reason", reason)
	return fmt.Errorf("%w: %s", ErrNoGPU, reason)
}

// Close frees the event set and shuts NVML down.
func (c *Collector) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events != nil {
		_ = guard(func() { c.events.Free() })
		c.events = nil
	}
	if c.started && c.initRet == nvml.SUCCESS {
		_ = guard(func() { c.lib.Shutdown() })
	}
	c.started, c.devices, c.noGPU, c.nvmlErr = false, nil, "", ""
}

// Collect reads every device once. It never fails: a call that fails is
// recorded with its return code and leaves its reading at zero.
func (c *Collector) Collect() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	_ = c.startLocked()
	snap := Snapshot{
		Init: c.hostInfo.Init, DriverVersion: c.hostInfo.DriverVersion,
		NVMLVersion: c.hostInfo.NVMLVersion, CUDAVersion: c.hostInfo.CUDAVersion,
		Calls: c.hostInfo.Calls, Devices: []Device{},
	}
	if c.noGPU != "" {
		snap.Reason = "no GPU: " + c.noGPU
		snap.NVMLError = c.nvmlErr
		snap.Took = Duration(time.Since(start))
		return snap
	}
	snap.Available = true
	for i, d := range c.devices {
		snap.Devices = append(snap.Devices, c.collectDevice(i, d))
	}
	snap.Events = c.drainEvents()
	snap.Took = Duration(time.Since(start))
	return snap
}

// collectDevice makes every per-device call; each failure only zeroes its
// own field, so a driver missing one metric still reports the others.
func (c *Collector) collectDevice(index int, d nvml.Device) Device {
	start := time.Now()
	out := Device{Index: index, Calls: map[string]string{}, Processes: []Process{}}
	call(out.Calls, "name", func() (r nvml.Return) { out.Name, r = d.GetName(); return })
	call(out.Calls, "uuid", func() (r nvml.Return) { out.UUID, r = d.GetUUID(); return })
	var v2 nvml.Memory_v2
	if r := call(out.Calls, "mem_v2", func() (r nvml.Return) { v2, r = d.GetMemoryInfo_v2(); return }); r == nvml.SUCCESS {
		out.Memory = Memory{TotalBytes: v2.Total, UsedBytes: v2.Used, ReservedBytes: v2.Reserved, FreeBytes: v2.Free, Version: "v2"}
	} else {
		// Older drivers (and GPUs before Turing) lack v2; v1's Used then
		// includes the driver's reservation.
		var v1 nvml.Memory
		if r := call(out.Calls, "mem", func() (r nvml.Return) { v1, r = d.GetMemoryInfo(); return }); r == nvml.SUCCESS {
			out.Memory = Memory{TotalBytes: v1.Total, UsedBytes: v1.Used, FreeBytes: v1.Free, Version: "v1"}
		} else {
			out.Error = "memory unreadable: " + out.Calls["mem"]
		}
	}
	call(out.Calls, "util", func() nvml.Return {
		u, r := d.GetUtilizationRates()
		out.UtilGPU, out.UtilMemory = u.Gpu, u.Memory
		return r
	})
	call(out.Calls, "temp", func() (r nvml.Return) { out.TemperatureC, r = d.GetTemperature(nvml.TEMPERATURE_GPU); return })
	call(out.Calls, "power", func() (r nvml.Return) { out.PowerMilliwatts, r = d.GetPowerUsage(); return })
	call(out.Calls, "power_limit", func() (r nvml.Return) { out.PowerLimitMilliwatts, r = d.GetEnforcedPowerLimit(); return })
	call(out.Calls, "sm_clock", func() (r nvml.Return) { out.SMClockMHz, r = d.GetClockInfo(nvml.CLOCK_SM); return })
	call(out.Calls, "mem_clock", func() (r nvml.Return) { out.MemClockMHz, r = d.GetClockInfo(nvml.CLOCK_MEM); return })
	call(out.Calls, "procs", func() nvml.Return {
		procs, r := d.GetComputeRunningProcesses()
		for _, p := range procs {
			out.Processes = append(out.Processes, Process{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory, Agent: c.opts.AgentPIDs[p.Pid]})
		}
		return r
	})
	// A lost GPU (fallen off the bus) answers every call with this code.
	for name, code := range out.Calls {
		if code == retString(nvml.ERROR_GPU_IS_LOST) {
			out.Error = fmt.Sprintf("GPU is lost (%s: %s)", name, code)
			break
		}
	}
	out.Took = Duration(time.Since(start))
	return out
}

// drainEvents takes what the event set holds without blocking for longer
// than EventWait per wait: a wait that times out means the set is empty.
func (c *Collector) drainEvents() []Event {
	if c.events == nil {
		return nil
	}
	var out []Event
	waitMS := uint32(c.opts.EventWait / time.Millisecond)
	for range c.opts.MaxEvents {
		var (
			data nvml.EventData
			r    nvml.Return
		)
		if perr := guard(func() { data, r = c.events.Wait(waitMS) }); perr != nil {
			c.log.Warn("GPU event wait failed", "err", perr)
			return out
		}
		if r != nvml.SUCCESS {
			if r != nvml.ERROR_TIMEOUT {
				c.log.Warn("GPU event wait failed", "ret", retString(r))
			}
			return out
		}
		ev := Event{Type: eventType(data.EventType), Data: data.EventData}
		if data.Device != nil {
			_ = guard(func() { ev.DeviceUUID, _ = data.Device.GetUUID() })
		}
		out = append(out, ev)
	}
	return out
}

func eventType(t uint64) string {
	switch t {
	case nvml.EventTypeXidCriticalError:
		return "xid"
	case nvml.EventTypeSingleBitEccError:
		return "ecc_single_bit"
	case nvml.EventTypeDoubleBitEccError:
		return "ecc_double_bit"
	}
	return fmt.Sprintf("type_%d", t)
}

// call runs one NVML call, records its return code under name and turns a
// panic into ERROR_UNKNOWN: a mock or binding without the function must not
// take the sidecar down.
func call(calls map[string]string, name string, f func() nvml.Return) nvml.Return {
	var r nvml.Return
	if perr := guard(func() { r = f() }); perr != nil {
		calls[name] = "panic: " + perr.Error()
		return nvml.ERROR_UNKNOWN
	}
	calls[name] = retString(r)
	return r
}

func guard(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	f()
	return nil
}

// retString is NVML's own text for r when the library is loaded ("Success",
// "Not Supported") and go-nvml's constant name otherwise.
func retString(r nvml.Return) (s string) {
	if perr := guard(func() { s = r.Error() }); perr != nil {
		return fmt.Sprintf("return %d", int32(r))
	}
	return s
}
