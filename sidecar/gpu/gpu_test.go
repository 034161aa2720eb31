package gpu

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// stubDevice fills in the calls the dgxh100 mock leaves unset, with the idle
// H100 numbers of the recorded fixture scaled by the device index so that a
// mix-up between devices shows.
func stubDevice(d *server.Device, pidBase uint32) {
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		m := d.MemoryInfo
		return nvml.Memory_v2{Version: 33554472, Total: m.Total, Reserved: 503316480, Used: m.Used, Free: m.Total - m.Used - 503316480}, nvml.SUCCESS
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: uint32(10 + d.Index), Memory: uint32(d.Index)}, nvml.SUCCESS
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return uint32(30 + d.Index), nvml.SUCCESS }
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(70000 + d.Index), nvml.SUCCESS }
	d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700000, nvml.SUCCESS }
	d.GetClockInfoFunc = func(t nvml.ClockType) (uint32, nvml.Return) {
		if t == nvml.CLOCK_SM {
			return 1980, nvml.SUCCESS
		}
		return 2619, nvml.SUCCESS
	}
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: pidBase + uint32(d.Index), UsedGpuMemory: 1 << 30}}, nvml.SUCCESS
	}
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
}

func newDGXH100(t testing.TB) *server.Server {
	t.Helper()
	srv := dgxh100.New()
	for _, d := range srv.Devices {
		stubDevice(d.(*server.Device), 4000)
	}
	withEvents(srv)
	return srv
}

// withEvents gives srv an event set that delivers events, then times out
// the way NVML does when nothing is pending.
func withEvents(srv *server.Server, events ...nvml.EventData) {
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		queue := append([]nvml.EventData(nil), events...)
		return &mock.EventSet{
			WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
				if len(queue) == 0 {
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
				e := queue[0]
				queue = queue[1:]
				return e, nvml.SUCCESS
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
}

func TestCollectDGXH100Mock(t *testing.T) {
	srv := newDGXH100(t)
	withEvents(srv, nvml.EventData{Device: srv.Devices[3], EventType: nvml.EventTypeXidCriticalError, EventData: 79})

	c := New(srv, Options{AgentPIDs: map[uint32]string{4002: "forge"}})
	defer c.Close()
	snap := c.Collect()
	if !snap.Available || len(snap.Devices) != 8 {
		t.Fatalf("available=%v devices=%d reason=%q", snap.Available, len(snap.Devices), snap.Reason)
	}
	if snap.DriverVersion != "550.54.15" || snap.CUDAVersion != 12040 {
		t.Errorf("versions: driver %q cuda %d", snap.DriverVersion, snap.CUDAVersion)
	}
	for i, d := range snap.Devices {
		if d.Name != "NVIDIA H100 80GB HBM3" || !strings.HasPrefix(d.UUID, "GPU-") {
			t.Errorf("device %d: name %q uuid %q", i, d.Name, d.UUID)
		}
		if d.Memory.Version != "v2" || d.Memory.TotalBytes != 81920<<20 || d.Memory.ReservedBytes != 503316480 {
			t.Errorf("device %d memory %+v", i, d.Memory)
		}
		if d.UtilGPU != uint32(10+i) || d.TemperatureC != uint32(30+i) || d.PowerMilliwatts != uint32(70000+i) ||
			d.PowerLimitMilliwatts != 700000 || d.SMClockMHz != 1980 || d.MemClockMHz != 2619 {
			t.Errorf("device %d readings %+v", i, d)
		}
		if len(d.Processes) != 1 || d.Processes[0].PID != uint32(4000+i) {
			t.Fatalf("device %d processes %+v", i, d.Processes)
		}
		wantAgent := ""
		if i == 2 {
			wantAgent = "forge"
		}
		if d.Processes[0].Agent != wantAgent {
			t.Errorf("device %d pid %d agent %q, want %q", i, d.Processes[0].PID, d.Processes[0].Agent, wantAgent)
		}
		for name, code := range d.Calls {
			if code != nvml.SUCCESS.Error() {
				t.Errorf("device %d call %s = %s", i, name, code)
			}
		}
	}
	if len(snap.Events) != 1 || snap.Events[0].Type != "xid" || snap.Events[0].Data != 79 || snap.Events[0].DeviceUUID != snap.Devices[3].UUID {
		t.Errorf("events %+v", snap.Events)
	}
	// The event set was drained: the next collection sees no event again.
	if again := c.Collect(); len(again.Events) != 0 {
		t.Errorf("second collection events %+v", again.Events)
	}
}

// A driver without the v2 memory call: v1's numbers are reported as such.
func TestMemoryFallsBackToV1(t *testing.T) {
	srv := newDGXH100(t)
	for _, d := range srv.Devices {
		d.(*server.Device).GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{}, nvml.ERROR_NOT_SUPPORTED
		}
	}
	snap := New(srv, Options{}).Collect()
	d := snap.Devices[0]
	if d.Memory.Version != "v1" || d.Memory.TotalBytes != 81920<<20 || d.Memory.ReservedBytes != 0 {
		t.Errorf("memory %+v", d.Memory)
	}
	if d.Calls["mem_v2"] != nvml.ERROR_NOT_SUPPORTED.Error() || d.Calls["mem"] != nvml.SUCCESS.Error() {
		t.Errorf("calls %v", d.Calls)
	}
}

// A device call the binding lacks (a nil mock func panics) and a failing
// call each zero only their own reading.
func TestFailingCallsAreRecordedNotFatal(t *testing.T) {
	srv := newDGXH100(t)
	d0 := srv.Devices[0].(*server.Device)
	d0.GetPowerUsageFunc = nil
	d0.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	srv.EventSetCreateFunc = nil
	snap := New(srv, Options{}).Collect()
	got := snap.Devices[0]
	if !strings.HasPrefix(got.Calls["power"], "panic: ") || got.Calls["temp"] != nvml.ERROR_GPU_IS_LOST.Error() {
		t.Errorf("calls %v", got.Calls)
	}
	if got.PowerLimitMilliwatts != 700000 || got.UtilGPU != 10 {
		t.Errorf("other readings lost: %+v", got)
	}
	if !strings.HasPrefix(snap.Calls["eventset"], "panic: ") || snap.Events != nil {
		t.Errorf("eventset %q events %v", snap.Calls["eventset"], snap.Events)
	}
}

func TestNoLibraryLogsOnceAndRunsOn(t *testing.T) {
	var logged strings.Builder
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	c := New(lib, Options{Logger: newTextLogger(&logged)})
	for range 3 {
		snap := c.Collect()
		if snap.Available || !strings.Contains(snap.Reason, "no GPU") || len(snap.Devices) != 0 {
			t.Fatalf("snapshot %+v", snap)
		}
		if snap.Init != nvml.ERROR_LIBRARY_NOT_FOUND.Error() {
			t.Errorf("init %q", snap.Init)
		}
	}
	if n := strings.Count(logged.String(), "no GPU"); n != 1 {
		t.Errorf(`"no GPU" logged %d times:\n%s`, n, logged.String())
	}
	c.Close()

	zero := &mock.Interface{
		InitFunc:                       func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:                   func() nvml.Return { return nvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "580.159.04", nvml.SUCCESS },
		SystemGetNVMLVersionFunc:       func() (string, nvml.Return) { return "13.580.159.04", nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 13000, nvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, nvml.Return) { return 0, nvml.SUCCESS },
	}
	if snap := New(zero, Options{}).Collect(); snap.Available || snap.Reason != "no GPU: no device" {
		t.Errorf("zero devices: %+v", snap)
	}
}

// The real library on this machine: with no driver it must say "no GPU",
// and with one it must read every device without a failed core call.
func TestRealLibrary(t *testing.T) {
	snap := New(nvml.New(), Options{}).Collect()
	b, _ := json.Marshal(snap)
	t.Logf("%s", b)
	if !snap.Available {
		if !strings.HasPrefix(snap.Reason, "no GPU") {
			t.Fatalf("reason %q", snap.Reason)
		}
		return
	}
	for _, d := range snap.Devices {
		if d.Calls["name"] != "Success" || d.Memory.TotalBytes == 0 {
			t.Errorf("device %d: %+v", d.Index, d)
		}
	}
}

func BenchmarkCollectPerDevice(b *testing.B) {
	srv := newDGXH100(b)
	c := New(srv, Options{})
	defer c.Close()
	c.Collect()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.Collect()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(srv.Devices)), "ns/device")
}

func TestDurationJSON(t *testing.T) {
	b, _ := json.Marshal(Duration(1500 * time.Microsecond))
	if string(b) != `{"text":"1.5ms","us":1500}` {
		t.Errorf("%s", b)
	}
}

func readFixture(t *testing.T) fixture {
	t.Helper()
	raw, err := os.ReadFile("testdata/h100-live.json")
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// BenchmarkCollectRealLibrary is one full collection per device through the
// real driver; it skips on a machine without one.
func BenchmarkCollectRealLibrary(b *testing.B) {
	c := New(nvml.New(), Options{})
	defer c.Close()
	snap := c.Collect()
	if !snap.Available {
		b.Skip(snap.Reason)
	}
	b.ResetTimer()
	for b.Loop() {
		c.Collect()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(snap.Devices)), "ns/device")
}
