package access

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/factory/factory/controlplane/store"
)

// OperatorTokenFile is the name, inside the data directory, of the file
// holding the operator token made at first start.
const OperatorTokenFile = "operator.token"

// BootstrapSubject is the subject of the operator token made at first
// start; audit entries by it read "operator".
const BootstrapSubject = "operator"

// Bootstrap makes sure someone can administer the control plane: when the
// store has no operator token that works (a first start, or every operator
// token revoked or expired), it creates one and writes its secret to
// DATA_DIR/operator.token, readable by the owner only. It returns the
// file's path and whether it made a token; otherwise it changes nothing,
// and an existing file is left as it is.
//
// Replicas sharing a database bootstrap one token between them: the store
// checks and creates in one transaction. The file lands in the data
// directory of the replica that made it.
func (s *Service) Bootstrap(ctx context.Context, dataDir string) (path string, created bool, err error) {
	path, err = filepath.Abs(filepath.Join(dataDir, OperatorTokenFile))
	if err != nil {
		return "", false, fmt.Errorf("bootstrap: %w", err)
	}
	// The directory comes first, so that a data directory that cannot be
	// written fails before a token exists whose secret would be lost.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return path, false, fmt.Errorf("bootstrap: %w", err)
	}
	tok, secret, err := s.create(ctx, CreateParams{
		Role:        store.RoleOperator,
		Subject:     BootstrapSubject,
		Description: "made at first start; the secret is in " + path,
		CreatedBy:   "bootstrap",
	}, true)
	if errors.Is(err, store.ErrAlreadyExists) {
		return path, false, nil
	}
	if err != nil {
		return path, false, fmt.Errorf("bootstrap operator token: %w", err)
	}
	if err := writeSecretFile(path, secret); err != nil {
		// A token whose secret reached no one would count as the operator
		// token and block the next start from making one: revoke it, so
		// that a restart, once the directory is fixed, tries again.
		if _, rerr := s.store.TokenRevoke(ctx, &store.TokenRevokeParams{ID: tok.ID, Now: s.clock.Now()}); rerr != nil {
			return path, false, fmt.Errorf("bootstrap: writing %s: %w (and revoking the unwritten token %s failed: %v)", path, err, tok.ID, rerr)
		}
		return path, false, fmt.Errorf("bootstrap: writing %s: %w (the token was revoked; a restart makes another)", path, err)
	}
	return path, true, nil
}

// writeSecretFile replaces path with secret, mode 0600. The secret is
// written to a private temporary file and renamed over path, so a reader
// never sees half a secret and the file is never briefly more open.
func writeSecretFile(path, secret string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	// CreateTemp makes the file 0600 already; Chmod states it and covers
	// filesystems that ignore the mode at creation.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
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
