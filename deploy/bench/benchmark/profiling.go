package benchmark

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// profileRun collects CPU profiles of Logbook back to back, chunk by chunk, until finished, and
// measures Logbook's and the benchmark's CPU over the same time.
type profileRun struct {
	name    string
	paths   []string
	stop    chan struct{}
	done    chan struct{}
	t0, t1  time.Time
	cpu0    int64 // Logbook's CPU ticks at the start
	bench0  int64 // the benchmark's
	cpu     float64
	bench   float64
	events  int64
	stopped sync.Once
}

// startProfiles starts collecting profiles of srv named name-<i>.pprof in dir, chunk seconds each.
func startProfiles(ctx context.Context, srv *Server, dir, name string, chunk time.Duration) *profileRun {
	pr := &profileRun{name: name, stop: make(chan struct{}), done: make(chan struct{})}
	pr.t0, pr.cpu0, pr.bench0 = time.Now(), srv.CPUTicks(), procTicks("/proc/self/stat")
	_ = os.MkdirAll(dir, 0o750)
	go func() {
		defer close(pr.done)
		for i := 0; ; i++ {
			path := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, i))
			if err := srv.CPUProfile(ctx, chunk, path); err != nil {
				progress("profile %s: %v", name, err)
				return
			}
			pr.paths = append(pr.paths, path)
			select {
			case <-pr.stop:
				return
			default:
			}
		}
	}()
	return pr
}

// finish waits for the profile in progress and records the CPU used since the start; events is
// what the phase took in.
func (pr *profileRun) finish(srv *Server, events int64) {
	pr.stopped.Do(func() { close(pr.stop) })
	<-pr.done
	pr.t1 = time.Now()
	pr.cpu = float64(srv.CPUTicks()-pr.cpu0) / clkTck
	pr.bench = float64(procTicks("/proc/self/stat")-pr.bench0) / clkTck
	pr.events = events
}

// stageCPU turns the profiles into CPU seconds per stage, scaled to the CPU the process used.
func (pr *profileRun) stageCPU(ctx context.Context) (*StageCPU, error) {
	samples, err := stageSamples(ctx, pr.paths)
	if err != nil {
		return nil, err
	}
	return &StageCPU{Phase: pr.name, Events: pr.events, Elapsed: pr.t1.Sub(pr.t0), CPU: pr.cpu, Bench: pr.bench,
		Seconds: spread(samples, pr.cpu)}, nil
}

// keepLimit is the most profiles make bench keeps inside the repository (docs/profiles); more go
// to the user's cache directory, named in the report.
var keepLimit = 512 << 10

// keepProfiles merges each profiled phase's chunks into one file (go tool pprof -proto) and keeps
// them in the profiles folder beside the report (docs/profiles for make bench, if together they
// fit keepLimit, else <user cache>/logbook/bench-profiles/<commit>; a temp folder for a quick run
// or -out -), replacing what an earlier run left there, and lists them in rep.Profiles.
func (rep *Report) keepProfiles(root string) {
	type merged struct {
		name string
		data []byte
	}
	var all []merged
	var size int
	merge := func(name string, paths []string) {
		if len(paths) == 0 {
			return
		}
		b, err := exec.Command("go", append([]string{"tool", "pprof", "-proto"}, paths...)...).Output()
		if err != nil {
			progress("keep profile %s: %v", name, err)
			return
		}
		all = append(all, merged{name, b})
		size += len(b)
	}
	for _, pr := range rep.runs {
		merge(pr.name, pr.paths)
	}
	for _, p := range rep.Profiles {
		merge(p.Name, []string{p.Path})
	}
	dir := filepath.Join(os.TempDir(), "logbook-bench-profiles")
	if !rep.Cfg.Quick && rep.Cfg.Out != "-" {
		dir = filepath.Join(filepath.Dir(rep.Cfg.Out), "profiles")
		if cache, err := os.UserCacheDir(); err == nil && size > keepLimit {
			_ = os.RemoveAll(dir) // an earlier run's, not this one's
			dir = filepath.Join(cache, "logbook", "bench-profiles", strings.Fields(rep.Commit + " unknown")[0])
		}
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		progress("keep profiles: %v", err)
		return
	}
	var kept []Profile
	for _, m := range all {
		path := filepath.Join(dir, m.name+".pprof")
		if err := os.WriteFile(path, m.data, 0o644); err != nil {
			progress("keep profile %s: %v", m.name, err)
			continue
		}
		kept = append(kept, Profile{Name: m.name, Path: path})
	}
	rep.Profiles = kept
	if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
		dir = rel
	}
	rep.ProfileDir, rep.ProfileBytes = dir, int64(size)
	progress("profiles kept in %s (%d KiB)", dir, size>>10)
}
