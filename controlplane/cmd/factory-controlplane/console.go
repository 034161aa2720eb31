package main

import (
	"log/slog"
	"os"
	"path/filepath"
)

// consoleLinkFile is where a console on loopback leaves its one-time
// sign-in link, readable by the owner only: `make run` prints it, so the
// first visit needs no token pasted.
const consoleLinkFile = "console.link"

func announceConsole(dataDir, url, signInPath string, log *slog.Logger) {
	file := filepath.Join(dataDir, consoleLinkFile)
	if signInPath == "" {
		_ = os.Remove(file)
		return
	}
	if err := os.WriteFile(file, []byte(url+signInPath+"\n"), 0o600); err != nil {
		log.Warn("could not write the console's sign-in link", "file", file, "err", err)
		return
	}
	log.Info("console: a one-time sign-in link is in the file (valid 15 minutes)", "file", file, "url", url)
}
