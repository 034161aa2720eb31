package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// leaseFile is the agent state file: for each agent, the tasks it holds and
// each lease's fencing token. It is what lets `task done` find the token
// that `task claim` got, across separate shell commands.
type leaseFile struct {
	// Agents maps agent name → task id → fencing token.
	Agents map[string]map[string]int64 `json:"agents"`
}

// held returns the agent's leases (nil when none).
func (f *leaseFile) held(agent string) map[string]int64 { return f.Agents[agent] }

// put records a lease.
func (f *leaseFile) put(agent, taskID string, token int64) {
	if f.Agents == nil {
		f.Agents = map[string]map[string]int64{}
	}
	if f.Agents[agent] == nil {
		f.Agents[agent] = map[string]int64{}
	}
	f.Agents[agent][taskID] = token
}

// drop forgets a lease, and the agent once it holds nothing.
func (f *leaseFile) drop(agent, taskID string) {
	delete(f.Agents[agent], taskID)
	if len(f.Agents[agent]) == 0 {
		delete(f.Agents, agent)
	}
}

// heldIDs lists the agent's task ids, sorted.
func (f *leaseFile) heldIDs(agent string) []string {
	ids := make([]string, 0, len(f.Agents[agent]))
	for id := range f.Agents[agent] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// leaseStore reads and updates one state file. Updates hold an exclusive
// lock on a sibling ".lock" file, so agents in concurrent shells sharing the
// file never lose each other's entries, and replace the file by rename, so a
// reader (or a crash) never sees half a file.
type leaseStore struct {
	path string
}

// defaultStateFile is $XDG_STATE_HOME/factory/leases.json, else
// ~/.local/state/factory/leases.json.
func defaultStateFile() string {
	if dir := os.Getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "factory", "leases.json")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "factory", "leases.json")
	}
	return filepath.Join(os.TempDir(), "factory", "leases.json")
}

// load reads the file; a missing file is an empty state.
func (s *leaseStore) load() (*leaseFile, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &leaseFile{Agents: map[string]map[string]int64{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	f := &leaseFile{}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, f); err != nil {
			return nil, fmt.Errorf("state file %s is not valid JSON: %w", s.path, err)
		}
	}
	if f.Agents == nil {
		f.Agents = map[string]map[string]int64{}
	}
	return f, nil
}

// update applies fn to the current state under the lock and writes the
// result back. Nothing is written when fn fails.
func (s *leaseStore) update(fn func(*leaseFile) error) error {
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state file directory: %w", err)
	}
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("lock state file: %w", err)
	}
	defer unlock()

	f, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	return writeFileAtomic(s.path, f)
}

// lostLookups is how many GetTask calls forgetLost makes at once.
const lostLookups = 8

// forgetLost drops from the file the agent's leases that the server no
// longer holds for it: the lease ran out and the task was rescued, the
// task was re-claimed, moved by an operator or finished elsewhere, or it
// is gone. It asks once per lease in the file (a few calls at a time),
// and keeps a lease it could not ask about: only the server's word that
// the lease is not ours forgets one.
func (s *leaseStore) forgetLost(ctx context.Context, q factoryv1.QueueServiceClient, agent string) error {
	f, err := s.load()
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		lost = map[string]int64{}
		g    errgroup.Group
	)
	g.SetLimit(lostLookups)
	for id, token := range f.held(agent) {
		g.Go(func() error {
			resp, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
			lease := resp.GetTask().GetLease()
			if isCode(err, codes.NotFound) || err == nil && (lease.GetHolder() != agent || lease.GetToken() != token) {
				mu.Lock()
				lost[id] = token
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait() // every lookup returns nil: one it could not make keeps its lease
	if len(lost) == 0 {
		return nil
	}
	return s.update(func(f *leaseFile) error {
		for id, token := range lost {
			// A claim made meanwhile wrote a new token: that lease is live.
			if tok, ok := f.held(agent)[id]; ok && tok == token {
				f.drop(agent, id)
			}
		}
		return nil
	})
}

// writeFileAtomic writes v as JSON to a temporary file in the same
// directory, syncs it and renames it over path.
func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := writeBytesAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// writeBytesAtomic writes b, readable by the owner only, to a temporary
// file in path's directory, syncs it and renames it over path.
func writeBytesAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
