package cli

import "syscall"

// workProcAttr starts CMD as the leader of a process group of its own:
// Ctrl-C at the worker's terminal reaches the worker, which drains, and
// not CMD, which finishes its task; and the worker can kill CMD with
// everything it started. Pdeathsig kills CMD when the worker dies
// (kill -9), so it does not work on under a lease nobody renews.
func workProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
