package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The factory binary, built once for the whole test binary by the first
// test that asks for it and removed by TestMain.
var factoryBin struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

// factoryBinary returns the path of the factory command built from this
// tree; every test of the package shares the one build.
func factoryBinary(t testing.TB) string {
	t.Helper()
	factoryBin.once.Do(func() {
		factoryBin.dir, factoryBin.err = os.MkdirTemp("", "factory-cli-test-")
		if factoryBin.err != nil {
			return
		}
		factoryBin.path = filepath.Join(factoryBin.dir, "factory")
		cmd := exec.Command("go", "build", "-o", factoryBin.path, "github.com/factory/factory/cli/cmd/factory")
		factoryBin.out, factoryBin.err = cmd.CombinedOutput()
	})
	if factoryBin.err != nil {
		t.Fatalf("go build factory: %v\n%s", factoryBin.err, factoryBin.out)
	}
	return factoryBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if factoryBin.dir != "" {
		os.RemoveAll(factoryBin.dir)
	}
	os.Exit(code)
}
