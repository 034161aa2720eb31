package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestLeaseStoreMissingFileIsEmpty(t *testing.T) {
	s := &leaseStore{path: filepath.Join(t.TempDir(), "nested", "leases.json")}
	f, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Agents) != 0 {
		t.Fatalf("want no agents, got %v", f.Agents)
	}
	// The first update creates the directory and the file.
	if err := s.update(func(f *leaseFile) error { f.put("a", "t1", 7); return nil }); err != nil {
		t.Fatal(err)
	}
	f, err = s.load()
	if err != nil {
		t.Fatal(err)
	}
	if got := f.held("a")["t1"]; got != 7 {
		t.Fatalf("token = %d, want 7", got)
	}
	info, err := os.Stat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode %v, want 0600: fencing tokens are the agent's to use", perm)
	}
}

func TestLeaseFileDropForgetsEmptyAgents(t *testing.T) {
	var f leaseFile
	f.put("a", "t2", 2)
	f.put("a", "t1", 1)
	f.put("b", "t3", 3)
	if got := f.heldIDs("a"); strings.Join(got, ",") != "t1,t2" {
		t.Fatalf("heldIDs = %v, want sorted t1,t2", got)
	}
	f.drop("a", "t1")
	f.drop("a", "t2")
	if _, ok := f.Agents["a"]; ok {
		t.Fatalf("agent a should be gone once it holds nothing: %v", f.Agents)
	}
	if f.held("b")["t3"] != 3 {
		t.Fatalf("agent b lost its lease: %v", f.Agents)
	}
}

func TestLeaseStoreCorruptFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	if err := os.WriteFile(path, []byte(`{"agents": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &leaseStore{path: path}
	if _, err := s.load(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("want an error naming the file, got %v", err)
	}
	// An update must not silently replace a file it could not read.
	if err := s.update(func(f *leaseFile) error { f.put("a", "t", 1); return nil }); err == nil {
		t.Fatal("update over a corrupt file succeeded")
	}
}

func TestLeaseStoreFailedUpdateWritesNothing(t *testing.T) {
	s := &leaseStore{path: filepath.Join(t.TempDir(), "leases.json")}
	if err := s.update(func(f *leaseFile) error { f.put("a", "t1", 1); return nil }); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(s.path)
	err := s.update(func(f *leaseFile) error {
		f.put("a", "t2", 2)
		return fmt.Errorf("changed my mind")
	})
	if err == nil {
		t.Fatal("want the callback's error")
	}
	after, _ := os.ReadFile(s.path)
	if string(before) != string(after) {
		t.Fatalf("file changed by a failed update:\n%s\n→\n%s", before, after)
	}
}

// Many writers at once, each adding its own entries: with the lock and the
// rename, every entry survives, readers never see half a file, and no
// temporary file is left behind.
func TestLeaseStoreConcurrentUpdates(t *testing.T) {
	dir := t.TempDir()
	s := &leaseStore{path: filepath.Join(dir, "leases.json")}
	const writers, each = 8, 25

	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A fresh store per read: nothing shared with the writers.
			if _, err := (&leaseStore{path: s.path}).load(); err != nil {
				readerErr <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			agent := fmt.Sprintf("agent-%d", w)
			for i := range each {
				err := (&leaseStore{path: s.path}).update(func(f *leaseFile) error {
					f.put(agent, fmt.Sprintf("task-%d", i), int64(i+1))
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatalf("a reader saw a broken file: %v", err)
	}

	f, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		if got := len(f.held(fmt.Sprintf("agent-%d", w))); got != each {
			t.Errorf("agent-%d has %d leases, want %d: an update was lost", w, got, each)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// The lock must hold across processes, as agents run in separate shells.
// The test binary re-runs itself as the writer processes.
func TestLeaseStoreConcurrentProcesses(t *testing.T) {
	if path := os.Getenv("FACTORY_TEST_LEASE_WRITER"); path != "" {
		agent := os.Getenv("FACTORY_TEST_LEASE_AGENT")
		n, _ := strconv.Atoi(os.Getenv("FACTORY_TEST_LEASE_COUNT"))
		for i := range n {
			if err := (&leaseStore{path: path}).update(func(f *leaseFile) error {
				f.put(agent, fmt.Sprintf("task-%d", i), int64(i+1))
				return nil
			}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	if testing.Short() {
		t.Skip("spawns processes; skipped under -short")
	}
	path := filepath.Join(t.TempDir(), "leases.json")
	const procs, each = 4, 30
	var cmds []*exec.Cmd
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseStoreConcurrentProcesses$")
		cmd.Env = append(os.Environ(),
			"FACTORY_TEST_LEASE_WRITER="+path,
			fmt.Sprintf("FACTORY_TEST_LEASE_AGENT=proc-%d", p),
			fmt.Sprintf("FACTORY_TEST_LEASE_COUNT=%d", each))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("writer process: %v", err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for p := range procs {
		if got := len(f.Agents[fmt.Sprintf("proc-%d", p)]); got != each {
			t.Errorf("proc-%d has %d leases, want %d", p, got, each)
		}
	}
}

func TestResolveLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	af := &agentFlags{agent: "a", stateFile: path}

	if _, err := af.resolveLease(nil, 0); err == nil || !strings.Contains(err.Error(), "holds no leases") {
		t.Fatalf("no leases: got %v", err)
	}
	if err := af.store().update(func(f *leaseFile) error { f.put("a", "t1", 4); f.put("b", "t9", 9); return nil }); err != nil {
		t.Fatal(err)
	}
	l, err := af.resolveLease(nil, 0)
	if err != nil || l.taskID != "t1" || l.token != 4 {
		t.Fatalf("one lease: got %+v, %v", l, err)
	}
	if _, err := af.resolveLease([]string{"t9"}, 0); err == nil || !strings.Contains(err.Error(), "no lease on t9") {
		t.Fatalf("another agent's task: got %v", err)
	}
	if err := af.store().update(func(f *leaseFile) error { f.put("a", "t2", 5); return nil }); err != nil {
		t.Fatal(err)
	}
	_, err = af.resolveLease(nil, 0)
	if err == nil || !strings.Contains(err.Error(), "t1, t2") {
		t.Fatalf("two leases: want an error listing t1, t2; got %v", err)
	}
	if l, err := af.resolveLease([]string{"t2"}, 0); err != nil || l.token != 5 {
		t.Fatalf("named lease: got %+v, %v", l, err)
	}
	if l, err := af.resolveLease([]string{"elsewhere"}, 42); err != nil || l.token != 42 {
		t.Fatalf("--fencing-token: got %+v, %v", l, err)
	}
	if _, err := af.resolveLease(nil, 42); err == nil {
		t.Fatal("--fencing-token without an id must be refused")
	}
}
