package benchmark

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// cpuProfile writes a short CPU profile of this process to path.
func cpuProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestKeepProfiles(t *testing.T) {
	root := t.TempDir()
	chunks := []string{filepath.Join(root, "a-0.pprof"), filepath.Join(root, "a-1.pprof")}
	for _, p := range chunks {
		cpuProfile(t, p)
	}
	out := filepath.Join(root, "docs", "benchmarks.md")
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOCACHE", strings.TrimSpace(string(gocache))) // go tool pprof is built there
	t.Setenv("XDG_CACHE_HOME", filepath.Join(root, "cache"))

	// Small: merged into docs/profiles, named relative to the repository.
	rep := &Report{Cfg: &Config{Out: out}, Commit: "abc1234 with uncommitted changes", runs: []*profileRun{{name: "single-c32-nokey", paths: chunks}}}
	rep.keepProfiles(root)
	if rep.ProfileDir != filepath.Join("docs", "profiles") || len(rep.Profiles) != 1 || rep.ProfileBytes == 0 {
		t.Fatalf("small: kept in %q (%d bytes): %+v", rep.ProfileDir, rep.ProfileBytes, rep.Profiles)
	}
	if _, err := os.Stat(filepath.Join(root, "docs", "profiles", "single-c32-nokey.pprof")); err != nil {
		t.Fatal(err)
	}

	// Over the limit: in the user's cache, and the repository's copy from the earlier run is gone.
	defer func(l int) { keepLimit = l }(keepLimit)
	keepLimit = 1
	rep.Profiles = nil
	rep.keepProfiles(root)
	want := filepath.Join(root, "cache", "logbook", "bench-profiles", "abc1234")
	if filepath.Join(root, rep.ProfileDir) != want && rep.ProfileDir != want {
		t.Fatalf("large: kept in %q, want %q", rep.ProfileDir, want)
	}
	if _, err := os.Stat(filepath.Join(want, "single-c32-nokey.pprof")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docs", "profiles")); !os.IsNotExist(err) {
		t.Fatalf("docs/profiles left behind: %v", err)
	}
}
