package telemetry

import (
	"runtime/debug"
	"testing"
)

func TestVersionOf(t *testing.T) {
	stamp := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "b851fd0ad9d19c3e0fac94222e7a56776f27a948"},
		{Key: "vcs.time", Value: "2026-12-06T22:27:47Z"},
	}
	modified := append(append([]debug.BuildSetting{}, stamp...), debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "dev"},
		{"no stamp", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"test binary", &debug.BuildInfo{}, "dev"},
		{"release tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: stamp}, "v1.4.0"},
		{"pseudo-version from the go command", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206222747-b851fd0ad9d1+dirty"}, Settings: modified}, "v0.0.0-20261206222747-b851fd0ad9d1+dirty"},
		{"VCS stamp only", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: stamp}, "v0.0.0-20261206222747-b851fd0ad9d1"},
		{"VCS stamp, modified", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: modified}, "v0.0.0-20261206222747-b851fd0ad9d1+dirty"},
		{"revision without a time", &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "b851fd0ad9d19c3e"}}}, "b851fd0ad9d1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := VersionOf(tc.bi); got != tc.want {
				t.Errorf("VersionOf = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBuildString(t *testing.T) {
	b := BuildOf(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "b851fd0ad9d19c3e0fac94222e7a56776f27a948"},
		{Key: "vcs.time", Value: "2026-12-06T22:27:47Z"},
		{Key: "vcs.modified", Value: "true"},
	}})
	want := "v0.0.0-20261206222747-b851fd0ad9d1+dirty (go1.26.8, commit b851fd0ad9d1 of 2026-12-06T22:27:47Z, modified)"
	if got := b.String(); got != want {
		t.Errorf("String = %q\nwant %q", got, want)
	}
	if got := (Build{Version: "dev"}).String(); got != "dev" {
		t.Errorf("a build without details: %q", got)
	}
}
