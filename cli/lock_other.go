//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd || windows)

package cli

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// lockFile falls back to an exclusive-create lock file on systems without
// flock. A lock left by a crashed process is taken over after a minute.
func lockFile(path string) (unlock func(), err error) {
	const stale = time.Minute
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if info, statErr := os.Stat(path); statErr == nil && time.Since(info.ModTime()) > stale {
			os.Remove(path)
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
}
