package gpu

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// fixture is the layout of testdata/h100-live.json: one real H100, sampled
// every second while idle and then under an inference load. It is a copy of
// ../shared/fixtures/nvml/h100-live.json so that the test runs anywhere.
type fixture struct {
	Init    string `json:"init"`
	Driver  string `json:"driver"`
	NVML    string `json:"nvml"`
	CUDA    int    `json:"cuda"`
	Count   int    `json:"count"`
	Devices []struct {
		Name           string   `json:"name"`
		UUID           string   `json:"uuid"`
		RegisterEvents string   `json:"register_events"`
		EventSet       string   `json:"eventset"`
		Samples        []sample `json:"samples"`
	} `json:"devices"`
}

type sample struct {
	T     string             `json:"t"`
	Calls map[string]string  `json:"calls"`
	Mem   nvml.Memory        `json:"mem"`
	MemV2 nvml.Memory_v2     `json:"mem_v2"`
	Util  nvml.Utilization   `json:"util"`
	Temp  uint32             `json:"temp_c"`
	Power uint32             `json:"power_mw"`
	Limit uint32             `json:"power_limit_mw"`
	SM    uint32             `json:"sm_clock_mhz"`
	MemCk uint32             `json:"mem_clock_mhz"`
	Procs []nvml.ProcessInfo `json:"procs"`
}

// ret turns the fixture's return-code text (NVML's nvmlErrorString) back
// into the code.
func ret(t *testing.T, s string) nvml.Return {
	switch s {
	case "Success":
		return nvml.SUCCESS
	case "Not Supported":
		return nvml.ERROR_NOT_SUPPORTED
	}
	t.Fatalf("fixture return code %q not mapped", s)
	return nvml.ERROR_UNKNOWN
}

// replay is an nvml.Interface whose one device answers with the sample that
// cur points at.
func replay(t *testing.T, f fixture, cur *int) nvml.Interface {
	fd := f.Devices[0]
	s := func() sample { return fd.Samples[*cur] }
	dev := &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return fd.Name, nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) { return fd.UUID, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return s().Mem, ret(t, s().Calls["mem"])
		},
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return s().MemV2, ret(t, s().Calls["mem_v2"])
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return s().Util, ret(t, s().Calls["util"]) },
		GetTemperatureFunc: func(sensor nvml.TemperatureSensors) (uint32, nvml.Return) {
			if sensor != nvml.TEMPERATURE_GPU {
				t.Errorf("temperature sensor %d", sensor)
			}
			return s().Temp, ret(t, s().Calls["temp"])
		},
		GetPowerUsageFunc:         func() (uint32, nvml.Return) { return s().Power, ret(t, s().Calls["power"]) },
		GetEnforcedPowerLimitFunc: func() (uint32, nvml.Return) { return s().Limit, ret(t, s().Calls["power_limit"]) },
		GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
			switch c {
			case nvml.CLOCK_SM:
				return s().SM, ret(t, s().Calls["sm_clock"])
			case nvml.CLOCK_MEM:
				return s().MemCk, ret(t, s().Calls["mem_clock"])
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return s().Procs, ret(t, s().Calls["procs"]) },
		RegisterEventsFunc:             func(uint64, nvml.EventSet) nvml.Return { return ret(t, fd.RegisterEvents) },
	}
	return &mock.Interface{
		InitFunc:                       func() nvml.Return { return ret(t, f.Init) },
		ShutdownFunc:                   func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return f.Driver, nvml.SUCCESS },
		SystemGetNVMLVersionFunc:       func() (string, nvml.Return) { return f.NVML, nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return f.CUDA, nvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, nvml.Return) { return f.Count, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc:     func(int) (nvml.Device, nvml.Return) { return dev, nvml.SUCCESS },
		EventSetCreateFunc: func() (nvml.EventSet, nvml.Return) {
			return &mock.EventSet{
				WaitFunc: func(uint32) (nvml.EventData, nvml.Return) { return nvml.EventData{}, nvml.ERROR_TIMEOUT },
				FreeFunc: func() nvml.Return { return nvml.SUCCESS },
			}, ret(t, fd.EventSet)
		},
	}
}

// TestReplayH100 feeds the recorded H100 readings through the collector and
// checks it reports exactly those numbers, idle and under load.
func TestReplayH100(t *testing.T) {
	f := readFixture(t)
	cur := 0
	c := New(replay(t, f, &cur), Options{AgentPIDs: map[uint32]string{495: "llama-inference"}})
	defer c.Close()
	sawIdle, sawLoad := false, false
	for i, s := range f.Devices[0].Samples {
		cur = i
		snap := c.Collect()
		if !snap.Available || len(snap.Devices) != 1 {
			t.Fatalf("sample %d: %+v", i, snap)
		}
		if snap.DriverVersion != f.Driver || snap.NVMLVersion != f.NVML || snap.CUDAVersion != f.CUDA {
			t.Errorf("versions %q %q %d", snap.DriverVersion, snap.NVMLVersion, snap.CUDAVersion)
		}
		d := snap.Devices[0]
		want := Memory{TotalBytes: s.MemV2.Total, UsedBytes: s.MemV2.Used, ReservedBytes: s.MemV2.Reserved, FreeBytes: s.MemV2.Free, Version: "v2"}
		if d.Memory != want {
			t.Errorf("sample %d memory %+v, want %+v", i, d.Memory, want)
		}
		// The quirk the v2 call exists for: v1's Used is v2's Used plus the
		// driver's reservation, so an idle GPU looks busy through v1.
		if s.Mem.Used != s.MemV2.Used+s.MemV2.Reserved {
			t.Errorf("sample %d: fixture v1 used %d != v2 used %d + reserved %d", i, s.Mem.Used, s.MemV2.Used, s.MemV2.Reserved)
		}
		if d.Memory.UsedBytes == 0 && s.Mem.Used > 0 {
			sawIdle = true
		}
		got := fmt.Sprintf("%s %s util=%d/%d temp=%d power=%d/%d clocks=%d/%d",
			d.Name, d.UUID, d.UtilGPU, d.UtilMemory, d.TemperatureC, d.PowerMilliwatts, d.PowerLimitMilliwatts, d.SMClockMHz, d.MemClockMHz)
		wantS := fmt.Sprintf("%s %s util=%d/%d temp=%d power=%d/%d clocks=%d/%d",
			f.Devices[0].Name, f.Devices[0].UUID, s.Util.Gpu, s.Util.Memory, s.Temp, s.Power, s.Limit, s.SM, s.MemCk)
		if got != wantS {
			t.Errorf("sample %d:\n got %s\nwant %s", i, got, wantS)
		}
		if len(d.Processes) != len(s.Procs) {
			t.Fatalf("sample %d processes %+v, want %+v", i, d.Processes, s.Procs)
		}
		for j, p := range s.Procs {
			if d.Processes[j] != (Process{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory, Agent: "llama-inference"}) {
				t.Errorf("sample %d process %+v, want pid %d mem %d", i, d.Processes[j], p.Pid, p.UsedGpuMemory)
			}
			sawLoad = true
		}
		for call, code := range s.Calls {
			if call == "mem" {
				continue // v1 is only asked when v2 fails
			}
			if d.Calls[call] != ret(t, code).Error() {
				t.Errorf("sample %d call %s = %q, fixture %q", i, call, d.Calls[call], code)
			}
		}
	}
	if !sawIdle || !sawLoad {
		t.Errorf("fixture lacks a phase: idle %v load %v", sawIdle, sawLoad)
	}
}

func newTextLogger(b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, nil))
}
