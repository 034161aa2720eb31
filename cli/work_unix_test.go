//go:build unix

package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Must hold: a task taken away while CMD runs (an operator kills it)
// fences the worker out at its next renewal: CMD's process group is
// killed at once, the task is neither completed nor failed by the
// worker, and no spend is reported after the loss.
func TestWorkLostLeaseKillsCMD(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("process groups: unix only")
	}
	p := newWorkPlane(t)
	id := p.create(1, "builder", nil)[0]
	pidFile := filepath.Join(t.TempDir(), "pid")
	w := p.startWorker(p.token, "--agent", "forge", "--role", "builder", "--lease", "3s", "--max-tasks", "1", "-o", "json",
		"--", "sh", "-c", `echo $$ > "$0"; i=0; while :; do i=$((i+1)); echo "::progress tick $i"; echo "::spend model=m tier=local cost_micros=1"; sleep 0.1; done`, pidFile)
	workEventually(t, 10*time.Second, "progress from CMD", func() bool { return strings.HasPrefix(p.task(id).GetProgress(), "tick") })
	pid, err := strconv.Atoi(strings.TrimSpace(string(workMust(os.ReadFile(pidFile)))))
	if err != nil {
		t.Fatal(err)
	}
	p.sh.ok("task", "kill", id, "--reason", "taken away by the operator")
	// The worker renews every second; the next renewal is refused.
	if code := w.wait(10 * time.Second); code != 0 {
		t.Fatalf("worker exited %d\n%s", code, w.stderr.String())
	}
	results, _ := parseWorkOutput(t, w.stdout.String())
	if len(results) != 1 || results[0].Outcome != "lost" || !strings.Contains(results[0].Error, "FAILED_PRECONDITION") {
		t.Fatalf("results: %+v", results)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("CMD (pid %d) still runs after its lease was lost", pid)
	}
	task := p.task(id)
	if task.GetState() != factoryv1.TaskState_TASK_STATE_FAILED || strings.Contains(task.GetLastError(), "CMD") {
		t.Errorf("task after the loss: %s, last error %q", task.GetState(), task.GetLastError())
	}
	reported := int64(results[0].SpendReports)
	if got := p.spendEvents()[id]; got != reported || reported == 0 {
		t.Errorf("spend events recorded %d; the worker reported %d", got, reported)
	}
}

// What CMD leaves running in its process group when it exits is killed
// with it, and does not hold the task open.
func TestWorkKillsWhatCMDLeftBehind(t *testing.T) {
	p := newWorkPlane(t)
	p.create(1, "builder", nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	w := p.startWorker(p.token, "--agent", "forge", "--role", "builder", "--max-tasks", "1", "-o", "json",
		"--", "sh", "-c", `sleep 30 & echo $! > "$0"; echo started`, pidFile)
	if code := w.wait(10 * time.Second); code != 0 {
		t.Fatalf("worker exited %d\n%s", code, w.stderr.String())
	}
	results, _ := parseWorkOutput(t, w.stdout.String())
	if len(results) != 1 || results[0].Outcome != "done" || results[0].DurationMS > 1500 {
		t.Fatalf("results: %+v", results)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(workMust(os.ReadFile(pidFile)))))
	if err != nil {
		t.Fatal(err)
	}
	workEventually(t, 5*time.Second, "the background sleep ends", func() bool { return workProcessGone(pid) })
}

// workerProcess is `factory work` run as the built binary.
type workerProcess struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

func (p *workPlane) startWorkerProcess(bin string, env []string, args ...string) *workerProcess {
	p.t.Helper()
	wp := &workerProcess{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	wp.cmd = exec.Command(bin, append([]string{"work"}, args...)...)
	wp.cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+p.addr, "FACTORY_TOKEN="+p.token, "XDG_CONFIG_HOME="+p.t.TempDir())
	wp.cmd.Env = append(wp.cmd.Env, env...)
	wp.cmd.Stdout, wp.cmd.Stderr = wp.stdout, wp.stderr
	if err := wp.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() {
		_ = wp.cmd.Wait()
		close(wp.done)
	}()
	p.t.Cleanup(func() {
		_ = wp.cmd.Process.Kill()
		<-wp.done
	})
	return wp
}

func (wp *workerProcess) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-wp.done:
		return wp.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("the worker did not exit within %s\nstderr:\n%s", d, wp.stderr.String())
	}
	return -1
}

// workProcessGone says whether pid has ended (a zombie nobody reaped yet
// counts as ended).
func workProcessGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	if runtime.GOOS != "linux" {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// Must hold, with the worker as the real binary: kill -9 of a worker
// leaves its task to be rescued when the lease runs out and done by
// another worker; SIGTERM drains (the running task finishes, nothing new
// is claimed, exit 0); a task still running after the grace is killed
// and failed with a clear error.
func TestWorkProcessKillAndDrain(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("signals and process groups: unix only")
	}
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)

	t.Run("kill -9 then rescue", func(t *testing.T) {
		p := newWorkPlane(t)
		id := p.create(1, "builder", nil)[0]
		dir := t.TempDir()
		script := `echo $$ > "$DIR/pid-$FACTORY_TASK_ATTEMPT"; if [ "$FACTORY_TASK_ATTEMPT" = 1 ]; then exec sleep 60; fi; echo "second try"`
		crashing := p.startWorkerProcess(bin, []string{"DIR=" + dir}, "--agent", "forge-a", "--role", "builder", "--lease", "2s", "--", "sh", "-c", script)
		workEventually(t, 15*time.Second, "the first worker starts CMD", func() bool {
			_, err := os.Stat(filepath.Join(dir, "pid-1"))
			return err == nil
		})
		pid, _ := strconv.Atoi(strings.TrimSpace(string(workMust(os.ReadFile(filepath.Join(dir, "pid-1"))))))
		killedAt := time.Now()
		if err := crashing.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		crashing.wait(t, 5*time.Second)
		if runtime.GOOS == "linux" {
			// Pdeathsig: CMD does not work on under a lease nobody renews.
			workEventually(t, 5*time.Second, "the dead worker's CMD ends", func() bool { return workProcessGone(pid) })
		}

		rescuer := p.startWorker(p.token, "--agent", "forge-b", "--role", "builder", "--lease", "2s", "--max-tasks", "1",
			"-o", "json", "--", "sh", "-c", strings.ReplaceAll(script, "$DIR", dir))
		if code := rescuer.wait(20 * time.Second); code != 0 {
			t.Fatalf("second worker exited %d\n%s", code, rescuer.stderr.String())
		}
		results, _ := parseWorkOutput(t, rescuer.stdout.String())
		if len(results) != 1 || results[0].TaskID != id || results[0].Outcome != "done" || results[0].Attempt != 2 {
			t.Fatalf("second worker's results: %+v", results)
		}
		if time.Since(killedAt) < 2*time.Second {
			t.Errorf("the task was done again %s after the kill, inside the first lease", time.Since(killedAt))
		}
		task := p.task(id)
		if task.GetState() != factoryv1.TaskState_TASK_STATE_DONE || task.GetAttempt() != 2 {
			t.Errorf("task: %s at attempt %d; want DONE at attempt 2", task.GetState(), task.GetAttempt())
		}
	})

	t.Run("SIGTERM drains", func(t *testing.T) {
		p := newWorkPlane(t)
		first := p.create(1, "builder", func(_ int, r *factoryv1.CreateTaskRequest) { r.Priority = 1 })[0]
		second := p.create(1, "builder", nil)[0]
		dir := t.TempDir()
		wp := p.startWorkerProcess(bin, []string{"DIR=" + dir}, "--agent", "forge", "--role", "builder", "--grace", "20s", "-o", "json",
			"--", "sh", "-c", `touch "$DIR/$FACTORY_TASK_ID"; sleep 1; echo finished`)
		workEventually(t, 15*time.Second, "the first task starts", func() bool {
			_, err := os.Stat(filepath.Join(dir, first))
			return err == nil
		})
		if err := wp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := wp.wait(t, 15*time.Second); code != 0 {
			t.Fatalf("worker exited %d after SIGTERM\n%s", code, wp.stderr.String())
		}
		results, _ := parseWorkOutput(t, wp.stdout.String())
		if len(results) != 1 || results[0].TaskID != first || results[0].Outcome != "done" {
			t.Fatalf("results: %+v\nstderr:\n%s", results, wp.stderr.String())
		}
		if task := p.task(first); task.GetState() != factoryv1.TaskState_TASK_STATE_DONE {
			t.Errorf("the running task: %s; want DONE", task.GetState())
		}
		if task := p.task(second); task.GetState() != factoryv1.TaskState_TASK_STATE_READY || task.GetAttempt() != 0 {
			t.Errorf("the waiting task: %s at attempt %d; want READY, never claimed", task.GetState(), task.GetAttempt())
		}
		if !strings.Contains(wp.stderr.String(), "work: stopping (signal): no new claims; 1 running task(s) get 20s to finish") {
			t.Errorf("stderr:\n%s", wp.stderr.String())
		}
	})

	t.Run("killed after the grace", func(t *testing.T) {
		p := newWorkPlane(t)
		id := p.create(1, "builder", nil)[0]
		dir := t.TempDir()
		wp := p.startWorkerProcess(bin, []string{"DIR=" + dir}, "--agent", "forge", "--role", "builder", "--grace", "500ms", "-o", "json",
			"--", "sh", "-c", `echo "working" >&2; touch "$DIR/started"; sleep 60`)
		workEventually(t, 15*time.Second, "the task starts", func() bool {
			_, err := os.Stat(filepath.Join(dir, "started"))
			return err == nil
		})
		if err := wp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := wp.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("worker exited %d after SIGTERM\n%s", code, wp.stderr.String())
		}
		results, _ := parseWorkOutput(t, wp.stdout.String())
		if len(results) != 1 || results[0].Outcome != "killed" {
			t.Fatalf("results: %+v", results)
		}
		task := p.task(id)
		if task.GetState() != factoryv1.TaskState_TASK_STATE_READY || task.GetLastError() != "worker stopped: killed after the 500ms grace; stderr ends:\nworking" {
			t.Errorf("task: %s, last error %q", task.GetState(), task.GetLastError())
		}
	})
}

// BenchmarkWorkOverhead measures what `factory work` adds to each task,
// with `true` as CMD and the worker as the built binary: claim answered →
// CMD started, CMD exited → completion acknowledged, CMD exited → next
// CMD started (p50/p99), and CPU per task. Run it as
//
//	go test -run '^$' -bench WorkOverhead -benchtime 1000x ./cli/
func BenchmarkWorkOverhead(b *testing.B) {
	if runtime.GOOS == "windows" {
		b.Skip("unix only")
	}
	bin := factoryBinary(b)
	for _, concurrency := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			p := newWorkPlane(b)
			p.create(b.N, "bench", nil)
			b.ResetTimer()
			wp := p.startWorkerProcess(bin, nil, "--agent", "bench", "--role", "bench", "--concurrency", strconv.Itoa(concurrency),
				"--max-tasks", strconv.Itoa(b.N), "--stats", "-o", "json", "--", "true")
			if code := wp.wait(b, 10*time.Minute); code != 0 {
				b.Fatalf("worker exited %d\n%s", code, wp.stderr.String())
			}
			b.StopTimer()
			_, stats := parseWorkOutput(b, wp.stdout.String())
			if stats == nil || stats.Outcomes["done"] != b.N {
				b.Fatalf("stats: %+v\nstderr:\n%s", stats, wp.stderr.String())
			}
			b.ReportMetric(stats.ClaimToStart.P50ms*1000, "start-p50-µs")
			b.ReportMetric(stats.ClaimToStart.P99ms*1000, "start-p99-µs")
			b.ReportMetric(stats.ExitToAck.P50ms*1000, "ack-p50-µs")
			b.ReportMetric(stats.ExitToAck.P99ms*1000, "ack-p99-µs")
			b.ReportMetric(stats.ExitToNextStart.P50ms*1000, "next-p50-µs")
			b.ReportMetric(stats.ExitToNextStart.P99ms*1000, "next-p99-µs")
			b.ReportMetric(stats.TasksPerSecond, "tasks/s")
			if stats.WorkerCPU != nil {
				b.ReportMetric(*stats.WorkerCPU, "worker-cpu-µs/task")
			}
			if stats.CMDCPU != nil {
				b.ReportMetric(*stats.CMDCPU, "cmd-cpu-µs/task")
			}
			b.Logf("%d tasks, concurrency %d: %.1f tasks/s; claim→start p50 %.3fms p99 %.3fms; exit→ack p50 %.3fms p99 %.3fms; exit→next start p50 %.3fms p99 %.3fms",
				stats.Tasks, concurrency, stats.TasksPerSecond, stats.ClaimToStart.P50ms, stats.ClaimToStart.P99ms,
				stats.ExitToAck.P50ms, stats.ExitToAck.P99ms, stats.ExitToNextStart.P50ms, stats.ExitToNextStart.P99ms)
		})
	}
}

func workMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
