package alert

import (
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
)

func (f *fakeFleet) setHosts(hosts ...HostReading) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts = hosts
}

// service_down: a probe failing on an ONLINE host fires after the rule's
// `for`, per host and service, and resolves when the probe recovers.
func TestServiceDownFiresAfterForAndResolves(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "service_down")
	down := HostReading{Host: "gpu-1", Online: true, Probes: []ProbeReading{{Service: "litellm", OK: false, Detail: "connection refused"}, {Service: "qdrant", OK: true}}}
	f.fleet.setHosts(down)
	if res := f.eval(); res.Pending != 1 || res.Firing != 0 {
		t.Fatalf("first failing probe: %+v, want one PENDING", res)
	}
	f.requireEvents()
	f.clock.Advance(2*time.Minute - time.Second)
	if res := f.eval(); res.Firing != 0 {
		t.Fatalf("before `for`: %+v", res)
	}
	f.clock.Advance(time.Second)
	if res := f.eval(); res.Firing != 1 {
		t.Fatalf("after `for`: %+v, want FIRING", res)
	}
	ev := f.requireEvents("[FIRING:1] service_down")[0]
	if !strings.Contains(ev.Text, "service litellm on gpu-1") {
		t.Errorf("event text %q", ev.Text)
	}
	a := f.alerts()[0]
	if a.Labels["host"] != "gpu-1" || a.Labels["service"] != "litellm" {
		t.Errorf("labels %v", a.Labels)
	}
	// The probe recovers.
	f.fleet.setHosts(HostReading{Host: "gpu-1", Online: true, Probes: []ProbeReading{{Service: "litellm", OK: true}, {Service: "qdrant", OK: true}}})
	f.clock.Advance(15 * time.Second)
	if res := f.eval(); res.Firing != 0 || res.Pending != 0 {
		t.Fatalf("after recovery: %+v", res)
	}
	f.requireEvents("[RESOLVED:1] service_down")
	if got := f.alerts()[0]; got.State != store.AlertResolved {
		t.Errorf("alert %+v, want RESOLVED", got)
	}
}

// The `for` of service_down is configurable.
func TestServiceDownForIsConfigurable(t *testing.T) {
	rules, err := Rules([]Rule{{Name: "service_down", Expr: ExprServiceDown, For: 30 * time.Second, Summary: "{{.Labels.service}} down"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Name == "service_down" && r.For != 30*time.Second {
			t.Errorf("for %v, want the override's 30s", r.For)
		}
	}
}

// gpu_unavailable fires on an NVML failure, on GPUs gone since the host
// reported them and on a lost GPU; a host without GPUs, or one whose
// readings are unknown (not ONLINE), does not.
func TestGPUUnavailableFiresOnNVMLFailure(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "gpu_unavailable")
	f.fleet.setHosts(
		HostReading{Host: "gpu-1", Online: true, GPUsReported: 1, NVMLError: "NVML init: Driver/library version mismatch"},
		HostReading{Host: "gpu-2", Online: true, GPUsReported: 2, GPUs: []GPUReading{{Index: 0, TotalBytes: 1}}},
		HostReading{Host: "gpu-3", Online: true, GPUsReported: 1, GPUs: []GPUReading{{Index: 0, Error: "GPU is lost"}}},
		HostReading{Host: "cpu-1", Online: true},
		HostReading{Host: "gpu-stale", Online: false, NVMLError: "NVML init: Unknown Error"},
	)
	if res := f.eval(); res.Firing != 3 {
		t.Fatalf("%+v, want 3 FIRING", res)
	}
	summaries := map[string]string{}
	for _, a := range f.alerts() {
		summaries[a.Labels["host"]] = a.Summary
	}
	want := map[string]string{
		"gpu-1": "GPU unavailable on gpu-1: NVML failing: NVML init: Driver/library version mismatch",
		"gpu-2": "GPU unavailable on gpu-2: 1 of 2 GPU(s) unavailable",
		"gpu-3": "GPU unavailable on gpu-3: 1 of 1 GPU(s) unavailable (GPU 0: GPU is lost)",
	}
	for host, w := range want {
		if summaries[host] != w {
			t.Errorf("%s: %q, want %q", host, summaries[host], w)
		}
	}
	if len(summaries) != 3 {
		t.Errorf("alerts for %v, want only gpu-1..3", summaries)
	}
	f.fleet.setHosts(HostReading{Host: "gpu-1", Online: true, GPUsReported: 1, GPUs: []GPUReading{{Index: 0, TotalBytes: 1}}})
	if res := f.eval(); res.Firing != 0 {
		t.Errorf("after the driver is fixed: %+v", res)
	}
}

// The registry source says which hosts are ONLINE and how many GPUs each
// ever reported, which service_down and gpu_unavailable read.
func TestRegistrySourceCarriesLivenessAndReportedGPUs(t *testing.T) {
	clock := &fakeClock{now: t0}
	reg := fleet.New(clock, fleet.Config{})
	if err := reg.Register(fleet.Hello{Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	reg.ReportedGPUs("gpu-1", 2)
	if err := reg.Telemetry("gpu-1", "reading"); err != nil {
		t.Fatal(err)
	}
	src := FleetRegistry(reg, nil, func(string, any) HostReading { return HostReading{} })
	hosts, err := src.Hosts(t.Context())
	if err != nil || len(hosts) != 1 || !hosts[0].Online || hosts[0].GPUsReported != 2 {
		t.Fatalf("hosts %+v, %v", hosts, err)
	}
	clock.Advance(time.Minute)
	if hosts, _ := src.Hosts(t.Context()); hosts[0].Online {
		t.Error("a STALE host read as ONLINE")
	}
}
