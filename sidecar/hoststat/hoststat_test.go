package hoststat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The files in testdata are this project's build machine's real /proc
// (Linux 2-CPU VM): stat.1 and stat.2 a second apart, meminfo, loadavg
// and net_dev.

func open(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestParseStatReadsTheAggregateCPULine(t *testing.T) {
	got, err := ParseStat(open(t, "stat.1"))
	if err != nil {
		t.Fatal(err)
	}
	// cpu  151290 0 27277 68473 478 0 342 66 0 0: guest time (the last
	// two) is inside user already; idle 68473 and iowait 478 are not busy.
	want := CPUTimes{Total: 151290 + 27277 + 68473 + 478 + 342 + 66, Busy: 151290 + 27277 + 342 + 66}
	if got != want {
		t.Fatalf("ParseStat = %+v, want %+v", got, want)
	}
	next, err := ParseStat(open(t, "stat.2"))
	if err != nil {
		t.Fatal(err)
	}
	// The machine was saturated: 205 jiffies passed, none idle.
	if u, ok := next.Usage(got); !ok || u != 1 {
		t.Fatalf("usage between the readings = %v %v, want 1", u, ok)
	}
}

func TestCPUUsageIsTheBusyShareBetweenReadings(t *testing.T) {
	prev := CPUTimes{Busy: 1000, Total: 4000}
	if u, ok := (CPUTimes{Busy: 1250, Total: 5000}).Usage(prev); !ok || u != 0.25 {
		t.Errorf("usage = %v %v, want 0.25", u, ok)
	}
	for _, cur := range []CPUTimes{prev, {Busy: 10, Total: 20}} { // no time passed; a reboot
		if _, ok := cur.Usage(prev); ok {
			t.Errorf("usage from %+v to %+v should be unknown", prev, cur)
		}
	}
}

func TestParseMeminfoReadsTotalAndAvailable(t *testing.T) {
	total, avail, err := ParseMeminfo(open(t, "meminfo"))
	if err != nil {
		t.Fatal(err)
	}
	if total != 24683772*1024 || avail != 22130960*1024 {
		t.Fatalf("total %d available %d", total, avail)
	}
	// A kernel without MemAvailable: free + buffers + cached.
	_, avail, err = ParseMeminfo(strings.NewReader("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n"))
	if err != nil || avail != 35*1024 {
		t.Fatalf("fallback available %d, %v", avail, err)
	}
	if _, _, err := ParseMeminfo(strings.NewReader("MemFree: 10 kB\n")); err == nil {
		t.Fatal("meminfo without MemTotal accepted")
	}
}

func TestParseLoadavg(t *testing.T) {
	l1, l5, l15, err := ParseLoadavg(open(t, "loadavg"))
	if err != nil || l1 != 17.04 || l5 != 18.58 || l15 != 12.85 {
		t.Fatalf("loadavg %v %v %v, %v", l1, l5, l15, err)
	}
	if _, _, _, err := ParseLoadavg(strings.NewReader("0.1 x")); err == nil {
		t.Fatal("short loadavg accepted")
	}
}

func TestParseNetDevLeavesLoopbackOut(t *testing.T) {
	got, err := ParseNetDev(open(t, "net_dev"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Network{{Device: "ifb0"}, {Device: "ifb1"}, {Device: "eth0", ReceiveBytes: 288608845, TransmitBytes: 905866}}
	if len(got) != len(want) {
		t.Fatalf("ParseNetDev = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("device %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// proc builds a proc root from the fixtures, with stat as the named file.
func proc(t *testing.T, dir, stat string) {
	t.Helper()
	copyFile := func(from, to string) {
		b, err := os.ReadFile(filepath.Join("testdata", from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, to)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, to), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(stat, "stat")
	copyFile("meminfo", "meminfo")
	copyFile("loadavg", "loadavg")
	copyFile("net_dev", "net/dev")
}

func TestCollectorReportsCPUFromTheSecondReading(t *testing.T) {
	dir := t.TempDir()
	proc(t, dir, "stat.1")
	c := New(dir)
	first := c.Collect()
	if first.Error != "" || first.CPUUsage != nil {
		t.Fatalf("first reading: %+v", first)
	}
	if first.MemoryTotalBytes != 24683772*1024 || first.MemoryUsedBytes != (24683772-22130960)*1024 || first.Load1 != 17.04 || len(first.Networks) != 3 {
		t.Fatalf("first reading: %+v", first)
	}
	proc(t, dir, "stat.2")
	second := c.Collect()
	if second.CPUUsage == nil || *second.CPUUsage != 1 {
		t.Fatalf("second reading's CPU usage: %v", second.CPUUsage)
	}
	if err := os.Remove(filepath.Join(dir, "loadavg")); err != nil {
		t.Fatal(err)
	}
	third := c.Collect()
	if !strings.Contains(third.Error, "loadavg") || third.MemoryTotalBytes == 0 {
		t.Fatalf("a missing file is named and the rest read: %+v", third)
	}
}

// The real /proc of the machine running the tests parses, when there is one.
func TestCollectorReadsThisMachine(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc here")
	}
	r := New("").Collect()
	if r.Error != "" || r.MemoryTotalBytes == 0 || r.MemoryUsedBytes > r.MemoryTotalBytes {
		t.Fatalf("reading: %+v", r)
	}
	for _, n := range r.Networks {
		if n.Device == "lo" {
			t.Fatal("loopback reported")
		}
	}
}
