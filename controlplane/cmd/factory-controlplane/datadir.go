package main

import (
	"log/slog"
	"os"
)

// warnWideDataDir warns when the data directory already exists with
// permissions for others. A new one is made 0700 and every file the
// control plane writes in it is 0600 (factory.db and its -wal and -shm,
// operator.token, backups), so others can read nothing; an existing
// directory is left as the operator made it, since it may be shared (the
// working directory, /srv), but its names are visible, so say so.
func warnWideDataDir(dir string, log *slog.Logger) {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("the data directory is open to other users; its files are the owner's only (0600), but to hide their names too run: chmod 700 "+dir,
			"data_dir", dir, "mode", perm.String())
	}
}
