package disk

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	got := Collect([]string{dir, "/definitely/not/here"})
	if len(got) != 2 {
		t.Fatalf("%+v", got)
	}
	u := got[0]
	if u.Error != "" || u.TotalBytes == 0 || u.AvailableBytes > u.TotalBytes || u.UsedPercent < 0 || u.UsedPercent > 100 || u.InodesTotal == 0 && u.InodesFree != 0 {
		t.Errorf("%+v", u)
	}
	if got[1].Error == "" || got[1].TotalBytes != 0 {
		t.Errorf("missing path: %+v", got[1])
	}
	// Cross-check against df where it exists: same filesystem size in 1K blocks.
	out, err := exec.Command("df", "-k", "--output=size", dir).Output()
	if err != nil {
		t.Skipf("df not usable here: %v", err)
	}
	lines := strings.Fields(string(out))
	kb, err := strconv.ParseUint(lines[len(lines)-1], 10, 64)
	if err != nil {
		t.Skipf("df output %q", out)
	}
	if kb != u.TotalBytes/1024 {
		t.Errorf("df says %d KiB, statfs %d", kb, u.TotalBytes/1024)
	}
}

// UsedPercent is df's Use%, used / (used + available), for the test's own
// filesystem (df rounds up).
func TestUsedPercentIsDfs(t *testing.T) {
	dir := t.TempDir()
	u := Collect([]string{dir})[0]
	if u.Error != "" {
		t.Fatal(u.Error)
	}
	if want := float64(u.UsedBytes) * 100 / float64(u.UsedBytes+u.AvailableBytes); u.UsedPercent != want {
		t.Errorf("UsedPercent %v, want used/(used+available) %v", u.UsedPercent, want)
	}
	out, err := exec.Command("df", "--output=pcent", dir).Output()
	if err != nil {
		t.Skipf("df not usable here: %v", err)
	}
	f := strings.Fields(string(out))
	df, err := strconv.Atoi(strings.TrimSuffix(f[len(f)-1], "%"))
	if err != nil {
		t.Skipf("df output %q", out)
	}
	if up := int(u.UsedPercent); !(up == df || up+1 == df) {
		t.Errorf("UsedPercent %.3f, df says %d%%", u.UsedPercent, df)
	}
}
