// Package hoststat reads a Linux host's CPU, memory, load and network from
// /proc: /proc/stat, /proc/meminfo, /proc/loadavg and /proc/net/dev. The
// CPU's usage is a rate, so the Collector keeps the previous /proc/stat
// reading and reports the busy share of the time between the two; the
// network's byte counts are the kernel's counters since boot, for
// Prometheus to rate.
package hoststat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Reading is one pass over /proc.
type Reading struct {
	// CPUUsage is the fraction (0 to 1) of CPU time, over all CPUs, that
	// was neither idle nor waiting on I/O since the previous reading; nil
	// on the first reading (or when the counters did not move).
	CPUUsage *float64 `json:"cpu_usage_ratio,omitempty"`
	// MemoryTotalBytes is MemTotal; MemoryUsedBytes is MemTotal minus
	// MemAvailable (what the kernel could not hand out without swapping).
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	MemoryUsedBytes  uint64 `json:"memory_used_bytes"`
	// Load1, Load5 and Load15 are the load averages.
	Load1  float64 `json:"load1"`
	Load5  float64 `json:"load5"`
	Load15 float64 `json:"load15"`
	// Networks are the network devices but loopback.
	Networks []Network `json:"networks"`
	// Error says what could not be read, or is empty.
	Error string `json:"error,omitempty"`
}

// Network is one device's byte counters since boot.
type Network struct {
	Device        string `json:"device"`
	ReceiveBytes  uint64 `json:"receive_bytes"`
	TransmitBytes uint64 `json:"transmit_bytes"`
}

// CPUTimes are the aggregate "cpu" line's jiffies: Busy is everything
// but idle and iowait; Total is user, nice, system, idle, iowait, irq,
// softirq and steal (guest time is already inside user and nice).
type CPUTimes struct {
	Busy, Total uint64
}

// Usage is the busy share of the time from prev to t; ok is false when no
// time passed or the counters went backwards (a reboot).
func (t CPUTimes) Usage(prev CPUTimes) (ratio float64, ok bool) {
	if t.Total <= prev.Total || t.Busy < prev.Busy {
		return 0, false
	}
	r := float64(t.Busy-prev.Busy) / float64(t.Total-prev.Total)
	return min(max(r, 0), 1), true
}

// ParseStat reads the aggregate CPU line of /proc/stat.
func ParseStat(r io.Reader) (CPUTimes, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return CPUTimes{}, fmt.Errorf("stat: cpu line has %d fields, want at least 4 counters", len(f)-1)
		}
		var v [8]uint64 // user nice system idle iowait irq softirq steal
		for i := range v {
			if i+1 >= len(f) {
				break // older kernels have fewer columns
			}
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("stat: cpu field %d: %w", i+1, err)
			}
			v[i] = n
		}
		var t CPUTimes
		for _, n := range v {
			t.Total += n
		}
		t.Busy = t.Total - v[3] - v[4]
		return t, nil
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, fmt.Errorf("stat: %w", err)
	}
	return CPUTimes{}, errors.New("stat: no cpu line")
}

// ParseMeminfo reads MemTotal and MemAvailable (bytes). A kernel without
// MemAvailable (before 3.14) gets MemFree + Buffers + Cached instead.
func ParseMeminfo(r io.Reader) (total, available uint64, err error) {
	vals := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		vals[key] = n
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("meminfo: %w", err)
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return 0, 0, errors.New("meminfo: no MemTotal")
	}
	available, ok = vals["MemAvailable"]
	if !ok {
		available = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return total, min(available, total), nil
}

// ParseLoadavg reads the three load averages of /proc/loadavg.
func ParseLoadavg(r io.Reader) (l1, l5, l15 float64, err error) {
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("loadavg: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("loadavg: %q has fewer than 3 fields", strings.TrimSpace(string(b)))
	}
	var out [3]float64
	for i := range out {
		if out[i], err = strconv.ParseFloat(f[i], 64); err != nil || out[i] < 0 {
			return 0, 0, 0, fmt.Errorf("loadavg: field %d: %q is not a load", i+1, f[i])
		}
	}
	return out[0], out[1], out[2], nil
}

// ParseNetDev reads /proc/net/dev's receive and transmit bytes per device,
// in the file's order, loopback ("lo") left out.
func ParseNetDev(r io.Reader) ([]Network, error) {
	var out []Network
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		if name == "" || name == "lo" || strings.Contains(name, "|") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("net/dev: %s has %d counters, want 16", name, len(f))
		}
		rx, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("net/dev: %s receive bytes: %w", name, err)
		}
		tx, err := strconv.ParseUint(f[8], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("net/dev: %s transmit bytes: %w", name, err)
		}
		out = append(out, Network{Device: name, ReceiveBytes: rx, TransmitBytes: tx})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("net/dev: %w", err)
	}
	return out, nil
}

// Collector reads /proc and remembers the last CPU counters between
// readings. Its methods are safe for concurrent use.
type Collector struct {
	root string

	mu   sync.Mutex
	prev *CPUTimes
}

// New returns a collector reading the proc filesystem at root; "" is
// /proc (tests point it at a copy).
func New(root string) *Collector {
	if root == "" {
		root = "/proc"
	}
	return &Collector{root: root}
}

// Collect reads every file; what fails is named in Error and the rest is
// reported.
func (c *Collector) Collect() Reading {
	var r Reading
	var errs []string
	read := func(name string, parse func(io.Reader) error) {
		f, err := os.Open(filepath.Join(c.root, name))
		if err == nil {
			err = parse(f)
			f.Close()
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	read("stat", func(f io.Reader) error {
		t, err := ParseStat(f)
		if err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.prev != nil {
			if u, ok := t.Usage(*c.prev); ok {
				r.CPUUsage = &u
			}
		}
		c.prev = &t
		return nil
	})
	read("meminfo", func(f io.Reader) error {
		total, avail, err := ParseMeminfo(f)
		r.MemoryTotalBytes, r.MemoryUsedBytes = total, total-avail
		return err
	})
	read("loadavg", func(f io.Reader) (err error) {
		r.Load1, r.Load5, r.Load15, err = ParseLoadavg(f)
		return err
	})
	read("net/dev", func(f io.Reader) (err error) {
		r.Networks, err = ParseNetDev(f)
		return err
	})
	r.Error = strings.Join(errs, "; ")
	if len(r.Error) > 1000 {
		r.Error = strings.ToValidUTF8(r.Error[:1000], "")
	}
	return r
}
