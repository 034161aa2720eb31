package gpu

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// TestNVMLFailureIsReportedNotOmitted: a host whose NVML is installed but
// fails (a broken driver) reports the error in its reading, where a host
// without the library reports none: only the first is a failing check.
func TestNVMLFailureIsReportedNotOmitted(t *testing.T) {
	cases := []struct {
		name    string
		lib     nvml.Interface
		wantErr string // "" for no NVML error
	}{
		{"no library", &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}, ""},
		{"driver not loaded", &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}, "NVML init"},
		{"mismatch", &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIB_RM_VERSION_MISMATCH }}, "NVML init"},
		{"count fails", &mock.Interface{
			InitFunc:                       func() nvml.Return { return nvml.SUCCESS },
			ShutdownFunc:                   func() nvml.Return { return nvml.SUCCESS },
			SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN },
			SystemGetNVMLVersionFunc:       func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN },
			SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN },
			DeviceGetCountFunc:             func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN },
		}, "device count"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.lib, Options{})
			defer c.Close()
			snap := c.Collect()
			if snap.Available || snap.Reason == "" {
				t.Fatalf("snapshot %+v: want unavailable with a reason", snap)
			}
			switch {
			case tc.wantErr == "" && snap.NVMLError != "":
				t.Errorf("NVMLError %q on a host without the library: that is no GPU, not a failure", snap.NVMLError)
			case tc.wantErr != "" && !strings.Contains(snap.NVMLError, tc.wantErr):
				t.Errorf("NVMLError %q, want it to say %q (reason %q)", snap.NVMLError, tc.wantErr, snap.Reason)
			}
		})
	}
}

// TestLostGPUIsReportedOnItsDevice: a GPU that fell off the bus answers
// ERROR_GPU_IS_LOST; its device carries the error instead of zeros that
// read as an idle GPU.
func TestLostGPUIsReportedOnItsDevice(t *testing.T) {
	srv := newDGXH100(t)
	lost := srv.Devices[3].(*server.Device)
	lost.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_GPU_IS_LOST }
	lost.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	c := New(srv, Options{})
	defer c.Close()
	snap := c.Collect()
	if !snap.Available || len(snap.Devices) != 8 {
		t.Fatalf("snapshot: available %v, %d devices", snap.Available, len(snap.Devices))
	}
	for i, d := range snap.Devices {
		if i == 3 && !strings.Contains(d.Error, "lost") {
			t.Errorf("device 3 error %q, want it lost", d.Error)
		}
		if i != 3 && d.Error != "" {
			t.Errorf("device %d error %q, want none", i, d.Error)
		}
	}
}
