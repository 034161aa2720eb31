package cli

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Each new secret gets its own file: a subject with several tokens gets
// one per token id, and a '/' in a subject stays in the file's name.
func TestSecretFilesAreOnePerToken(t *testing.T) {
	rt := func(id, subject string) *factoryv1.RotatedToken {
		return &factoryv1.RotatedToken{NewToken: &factoryv1.Token{Id: id, Subject: subject}}
	}
	got := secretFiles("d", []*factoryv1.RotatedToken{rt("1", "forge"), rt("2", "scout"), rt("3", "scout"), rt("4", "team/lead")})
	want := []string{filepath.Join("d", "forge.token"), filepath.Join("d", "scout.2.token"), filepath.Join("d", "scout.3.token"), filepath.Join("d", "team%2Flead.token")}
	if !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "forge.token")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSecretFile(path, "fct_new"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	info, _ := os.Stat(path)
	if err != nil || string(b) != "fct_new\n" || info.Mode().Perm() != 0o600 {
		t.Fatalf("replaced secret file: %q %v %v", b, info.Mode(), err)
	}
}
