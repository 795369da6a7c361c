// Package benchmark is Logbook's load tool (`make bench`, issue 5): it measures the single-process
// Logbook it starts (single-event and bulk ingest, end-to-end latency, search at two data-set
// sizes, export, peak RSS per phase) against ceilings measured in the same run on the same
// machine (raw JetStream publishing, raw ClickHouse INSERT), and writes one table to
// docs/benchmarks.md.
package benchmark

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/chdb"
)

// Config is what a run measures; ParseFlags fills it.
type Config struct {
	Quick       bool
	Sizes       []int64 // stored events at which search and export are measured
	Conc        []int   // single-event ingest concurrencies
	Keys        []bool  // single-event ingest without (false) and with (true) Idempotency-Keys
	IndexRows   int64   // rows per variant of the INSERT ceiling without each skip index (0: none)
	Skip        map[string]bool
	Step        time.Duration
	E2E         time.Duration
	CeilingDur  time.Duration
	InsertRows  int64
	SearchN     int
	Senders     int
	Lines       int
	AlertDur    time.Duration // alert latency phase
	AlertBg     float64       // its background load, events/s
	CatchUpN    int           // backlog of the log-stream catch-up phase
	Out         string        // Markdown file the results go to ("-": none)
	Dir         string        // work directory (data, profiles); a fresh temp dir when empty
	Keep        bool
	Profile     time.Duration // CPU profile length per profiled phase; 0: none
	LibPath     string
	Args        []string
	workDirMade bool
}

// ParseFlags reads the command line; BENCH_QUICK=1 in the environment means -quick.
func ParseFlags(args []string) (*Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "smoke run: small sizes and short steps (also BENCH_QUICK=1)")
	sizes := fs.String("sizes", "", "stored-event sizes for search and export (default 1000000,10000000; quick 20000,100000)")
	conc := fs.String("conc", "32,256", "single-event ingest concurrencies")
	keys := fs.String("keys", "both", "single-event ingest: none (no Idempotency-Key), key (the SDK's key), or both")
	indexRows := fs.Int64("index-rows", -1, "rows per INSERT ceiling without each skip index (default 200000; quick 20000; 0: skip)")
	skip := fs.String("skip", "", "phases to leave out, comma-separated: single, e2e, alert, catchup, search, export, isolation")
	step := fs.Duration("step", 0, "duration of each single-event step (default 10s; quick 3s)")
	e2e := fs.Duration("e2e", 0, "duration of the end-to-end phase (default 15s; quick 5s)")
	ceil := fs.Duration("ceiling", 0, "duration of each JetStream ceiling (default 10s; quick 3s)")
	insertRows := fs.Int64("insert-rows", 0, "rows of the ClickHouse INSERT ceiling (default 500000; quick 50000)")
	searchN := fs.Int("search-n", 0, "queries per search kind (default 100; quick 30)")
	senders := fs.Int("senders", 4, "concurrent bulk senders")
	lines := fs.Int("lines", 1000, "events per bulk request")
	out := fs.String("out", "", "Markdown file for the results (default docs/benchmarks.md; quick: a temp file; - for none)")
	dir := fs.String("dir", "", "work directory for data and profiles (default: a fresh temp dir, removed afterwards)")
	keep := fs.Bool("keep", false, "keep the work directory")
	profile := fs.Duration("profile", 10*time.Second, "CPU profile of Logbook during search and export (0: none); single-event steps and bulk loads are always profiled whole")
	alertDur := fs.Duration("alert", 0, "duration of the alert latency phase (default 30s; quick 10s)")
	alertBg := fs.Float64("alert-bg", 1000, "background load of the alert latency phase, events/s")
	catchUp := fs.Int("catch-up", 0, "backlog of the log-stream catch-up phase (default 200000; quick 20000)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c := &Config{Quick: *quick, Senders: *senders, Lines: *lines, Out: *out, Dir: *dir, Keep: *keep,
		Profile: *profile, LibPath: chdb.DefaultLibPath(), Args: args}
	pick := func(v, full, q time.Duration) time.Duration {
		switch {
		case v > 0:
			return v
		case c.Quick:
			return q
		}
		return full
	}
	c.Step = pick(*step, 10*time.Second, 3*time.Second)
	c.E2E = pick(*e2e, 15*time.Second, 5*time.Second)
	c.CeilingDur = pick(*ceil, 10*time.Second, 3*time.Second)
	c.AlertDur, c.AlertBg, c.CatchUpN = pick(*alertDur, 30*time.Second, 10*time.Second), *alertBg, *catchUp
	if c.CatchUpN <= 0 {
		c.CatchUpN = map[bool]int{false: 200_000, true: 20_000}[c.Quick]
	}
	c.InsertRows, c.SearchN = *insertRows, *searchN
	c.IndexRows = *indexRows
	if c.IndexRows < 0 {
		c.IndexRows = map[bool]int64{false: 200_000, true: 20_000}[c.Quick]
	}
	switch *keys {
	case "none":
		c.Keys = []bool{false}
	case "key":
		c.Keys = []bool{true}
	case "both":
		c.Keys = []bool{false, true}
	default:
		return nil, fmt.Errorf("-keys: want none, key or both, got %q", *keys)
	}
	c.Skip = map[string]bool{}
	for _, f := range strings.Split(*skip, ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.Skip[f] = true
		}
	}
	if c.InsertRows <= 0 {
		c.InsertRows = map[bool]int64{false: 500_000, true: 50_000}[c.Quick]
	}
	if c.SearchN <= 0 {
		c.SearchN = map[bool]int{false: 100, true: 30}[c.Quick]
	}
	if c.Quick && c.Profile > 3*time.Second {
		c.Profile = 3 * time.Second
	}
	s := *sizes
	if s == "" {
		s = map[bool]string{false: "1000000,10000000", true: "20000,100000"}[c.Quick]
	}
	var prev int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n <= prev {
			return nil, fmt.Errorf("-sizes: want increasing positive counts, got %q", s)
		}
		c.Sizes, prev = append(c.Sizes, n), n
	}
	for _, f := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-conc: want positive counts, got %q", *conc)
		}
		c.Conc = append(c.Conc, n)
	}
	if c.Senders < 1 || c.Lines < 1 || c.Lines > 1000 {
		return nil, errors.New("-senders must be positive and -lines 1..1000")
	}
	return c, nil
}

// searchConc is how many heavy searches run at once in the isolation phase.
const searchConc = 8

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Run performs the whole benchmark and writes the report.
func Run(ctx context.Context, cfg *Config) (err error) {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "logbook-bench-"); err != nil {
			return err
		}
		cfg.workDirMade = true
	}
	defer func() {
		if cfg.workDirMade && !cfg.Keep {
			_ = os.RemoveAll(cfg.Dir)
		} else {
			progress("work directory kept: %s", cfg.Dir)
		}
	}()
	if cfg.Out == "" {
		cfg.Out = filepath.Join(root, "docs", "benchmarks.md")
		if cfg.Quick {
			cfg.Out = filepath.Join(os.TempDir(), "logbook-bench-quick.md")
		}
	}
	if _, err := os.Stat(cfg.LibPath); err != nil {
		return fmt.Errorf("libchdb.so not found at %s (run `make libchdb`): %w", cfg.LibPath, err)
	}
	progress("building deploy/logbook")
	bin, err := BuildLogbook(ctx, cfg.Dir)
	if err != nil {
		return err
	}
	rep := &Report{Cfg: cfg, Machine: DescribeMachine(cfg.Dir), Started: time.Now(), Commit: commitOf(root)}
	rep.busy0, rep.self0 = busyTicks(), procTicks("/proc/self/stat")
	rep.load0 = loadAvg()

	// Ceilings, in this process, before Logbook starts.
	end := time.Now().Truncate(time.Second)
	progress("ceiling: JetStream async publish and atomic batches of 1000 (%s each)", cfg.CeilingDur)
	ceilGen := &Gen{End: end, Span: 365 * 24 * time.Hour, N: cfg.InsertRows, Seed: 1}
	c := &rep.Ceil
	if c.AsyncPublish, c.BatchPublish, c.PayloadLen, err = JetStreamCeilings(ctx, filepath.Join(cfg.Dir, "ceiling-nats"), ceilGen, cfg.CeilingDur); err != nil {
		return fmt.Errorf("jetstream ceiling: %w", err)
	}
	progress("ceiling: the gateway's publish path, %v concurrent, without and with Idempotency-Keys (%s each)", cfg.Conc, cfg.CeilingDur)
	if c.Publish, err = PublishCeilings(ctx, filepath.Join(cfg.Dir, "ceiling-publish"), ceilGen, cfg.Conc, cfg.Keys, cfg.CeilingDur); err != nil {
		return fmt.Errorf("publish ceiling: %w", err)
	}
	_ = os.RemoveAll(filepath.Join(cfg.Dir, "ceiling-publish"))
	progress("ceiling: ClickHouse INSERT of %d rows; then %d rows without each skip index", cfg.InsertRows, cfg.IndexRows)
	c.InsertRows = cfg.InsertRows
	if c.Insert, c.InsertCPU, c.InsertIndexes, err = InsertCeiling(ctx, cfg.LibPath, filepath.Join(cfg.Dir, "ceiling-clickhouse"), ceilGen, cfg.InsertRows, cfg.IndexRows); err != nil {
		return fmt.Errorf("insert ceiling: %w", err)
	}
	_ = os.RemoveAll(filepath.Join(cfg.Dir, "ceiling-nats"))
	_ = os.RemoveAll(filepath.Join(cfg.Dir, "ceiling-clickhouse"))
	progress("ceilings: async %.0f msg/s, batch %.0f msg/s, insert %.0f rows/s", c.AsyncPublish, c.BatchPublish, c.Insert)

	progress("starting logbook")
	streamBytes := max(int64(4)<<30, cfg.Sizes[len(cfg.Sizes)-1]*1200+2<<30) // three streams share the disk
	srv, err := StartServer(ctx, bin, filepath.Join(cfg.Dir, "data"), streamBytes)
	if err != nil {
		return err
	}
	defer srv.Stop()
	rep.srv = srv
	cl := NewClient(srv.Base, 1024)
	profDir := filepath.Join(cfg.Dir, "profiles")
	_ = os.MkdirAll(profDir, 0o750)
	profile := func(name string, limit time.Duration) func() {
		d := min(cfg.Profile, limit)
		if d < time.Second {
			return func() {}
		}
		path := filepath.Join(profDir, name+".pprof")
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := srv.CPUProfile(ctx, d, path); err != nil {
				progress("profile %s: %v", name, err)
				return
			}
			rep.Profiles = append(rep.Profiles, Profile{Name: name, Path: path})
		}()
		return func() { <-done }
	}
	phase := func(name string, fn func() error) (PhaseMem, error) {
		_ = srv.ResetPeak()
		before, _ := srv.Memory()
		ticks, t0 := srv.CPUTicks(), time.Now()
		if err := fn(); err != nil {
			return PhaseMem{}, fmt.Errorf("%s: %w\nlogbook's log ends with:\n%s", name, err, srv.tail())
		}
		_, peak := srv.Memory()
		cpu := float64(srv.CPUTicks()-ticks) / clkTck / time.Since(t0).Seconds()
		if err := srv.Alive(); err != nil {
			return PhaseMem{}, err
		}
		return PhaseMem{Before: before, Peak: peak, CPU: cpu}, nil
	}

	// Single-event ingest: each concurrency without and with Idempotency-Keys, each step profiled
	// whole (CPU per event per stage).
	bodies := LiveBodies(20_000, 3)
	for _, keyed := range cfg.Keys {
		for _, n := range cfg.Conc {
			if cfg.Skip["single"] {
				break
			}
			progress("single-event ingest, concurrency %d, %s, %s", n, keyName(keyed), cfg.Step)
			var st *StepResult
			name := singleName(n, keyed)
			var drained time.Duration
			mem, err := phase("single-event ingest", func() error {
				// Profiled until the pipeline has stored what the step took in, so the validator's
				// and the writer's share is whole.
				pr := startProfiles(ctx, srv, profDir, name, time.Second) // short chunks: the last one ends soon after the drain
				st = cl.SingleEvents(ctx, bodies, n, keyed, cfg.Step)
				t, err := srv.WaitDrained(ctx, 100*time.Millisecond, 5*time.Minute)
				drained = t.Sub(st.End)
				pr.finish(srv, st.OK)
				rep.runs = append(rep.runs, pr)
				return err
			})
			if err != nil {
				return err
			}
			st.Drain = drained
			rep.Single = append(rep.Single, SingleRow{StepResult: st, Mem: mem})
			progress("  %.0f events/s, p50 %s, p99 %s, failures: %d %s; stored %s after the step", st.Rate(), FormatDuration(Percentile(st.Lat, 50)),
				FormatDuration(Percentile(st.Lat, 99)), st.Fail.Total(), st.Fail, drained.Round(time.Millisecond))
		}
	}

	// End to end under moderate load.
	best := 0.0
	for _, s := range rep.Single {
		best = max(best, s.Rate())
	}
	bgRate := min(max(best/4, 200), 5000)
	if !cfg.Skip["e2e"] {
		progress("end to end: %s under %.0f events/s", cfg.E2E, bgRate)
		rep.E2EMem, err = phase("end to end", func() error {
			var err error
			rep.E2E, err = cl.EndToEnd(ctx, bodies, bgRate, 16, cfg.E2E)
			return err
		})
		if err != nil {
			return err
		}
		progress("  p50 %s, p99 %s (%d probes, %d unseen)", FormatDuration(Percentile(rep.E2E.Lat, 50)), FormatDuration(Percentile(rep.E2E.Lat, 99)), rep.E2E.Probes, rep.E2E.Unseen)
		if _, err := srv.WaitDrained(ctx, 200*time.Millisecond, 5*time.Minute); err != nil {
			return err
		}
	}
	if err := rep.alertsAndStreams(ctx, cl, srv, bodies, phase); err != nil {
		return err
	}

	// Data set: load through bulk ingest, then search and export at each size.
	perOrg := map[string]int64{}
	var stored int64
	for si, size := range cfg.Sizes {
		delta := size - stored
		g := &Gen{End: end, Span: 365 * 24 * time.Hour, N: delta, Seed: uint64(si + 1)}
		progress("bulk ingest: %d events (to %d stored), %d senders × %d lines", delta, size, cfg.Senders, cfg.Lines)
		var b *BulkResult
		mem, err := phase("bulk ingest", func() error {
			pr := startProfiles(ctx, srv, profDir, fmt.Sprintf("bulk-%s", sizeName(size)), 10*time.Second)
			var err error
			b, err = cl.Bulk(ctx, srv, g, cfg.Senders, cfg.Lines)
			if b != nil {
				pr.finish(srv, b.Events)
				rep.runs = append(rep.runs, pr)
			}
			return err
		})
		if err != nil {
			return err
		}
		for k, v := range b.PerOrg {
			perOrg[k] += v
		}
		stored = size
		progress("  accepted %d in %s, visible in %s: %.0f events/s end to end; failures: %d %s", b.Accepted,
			b.AcceptedIn.Round(time.Millisecond), b.VisibleIn.Round(time.Millisecond), float64(b.Events)/b.VisibleIn.Seconds(), b.Fail.Total(), b.Fail)
		row := SizeRow{Size: size, Bulk: b, BulkMem: mem}
		rep.Sizes = append(rep.Sizes, row)
		if err := rep.searchAndExport(ctx, cl, srv, si, end, perOrg, phase, profile); err != nil {
			return err
		}
		if si < len(cfg.Sizes)-1 && cfg.Out != "-" { // a partial report, in case the run is stopped
			rep.Partial = true
			rep.finish()
			if err := rep.Write(cfg.Out, rep.Table()); err != nil {
				return err
			}
		}
	}
	// Isolation: the end-to-end phase quiet and under heavy free-text searches, on the full data set.
	if !cfg.Skip["isolation"] {
		if err := rep.isolation(ctx, cl, stored, bodies, bgRate, phase); err != nil {
			return err
		}
	}

	rep.Partial = false
	if rep.Rejected, err = srv.Rejected(ctx); err != nil {
		return err
	}
	rep.finish()
	srv.Stop()

	for _, pr := range rep.runs {
		st, err := pr.stageCPU(ctx)
		if err != nil {
			progress("stage CPU of %s: %v", pr.name, err)
			continue
		}
		rep.Stages = append(rep.Stages, st)
	}
	rep.keepProfiles(root)
	rep.summarizeProfiles(ctx)
	table := rep.Table()
	fmt.Println()
	fmt.Print(table.Markdown())
	if cfg.Out != "-" {
		if err := rep.Write(cfg.Out, table); err != nil {
			return err
		}
		progress("results written to %s", cfg.Out)
	}
	return nil
}

// searchAndExport runs the search and export phases at the size of rep.Sizes[si].
func (rep *Report) searchAndExport(ctx context.Context, cl *Client, srv *Server, si int, end time.Time, perOrg map[string]int64,
	phase func(string, func() error) (PhaseMem, error), profile func(string, time.Duration) func()) error {
	cfg := rep.Cfg
	row := &rep.Sizes[si]
	size := row.Size
	var err error
	if !cfg.Skip["search"] {
		progress("search at %d events (%d queries per kind)", size, cfg.SearchN)
		row.SearchMem, err = phase("search", func() error {
			wait := func() {}
			if si == len(cfg.Sizes)-1 {
				wait = profile(fmt.Sprintf("search-%d", size), time.Hour)
			}
			var err error
			row.Search, err = cl.Search(ctx, Orgs[0].ID, end, cfg.SearchN)
			wait()
			return err
		})
		if err != nil {
			return err
		}
		for _, s := range row.Search {
			progress("  %s: p50 %s, p95 %s, %.1f hits", s.Kind, FormatDuration(Percentile(s.Lat, 50)), FormatDuration(Percentile(s.Lat, 95)), s.AvgHits)
		}
	}
	if cfg.Skip["export"] {
		return nil
	}
	progress("export of %s at %d events", Orgs[0].ID, size)
	var exportErr error
	row.ExportMem, err = phase("export", func() error {
		wait := func() {}
		if si == len(cfg.Sizes)-1 {
			wait = profile(fmt.Sprintf("export-%d", size), time.Hour)
		}
		row.Export, exportErr = cl.Export(ctx, Orgs[0].ID, end.Add(-366*24*time.Hour), end.Add(time.Hour))
		wait()
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	if exportErr != nil { // a failed export is a result, not the end of the run
		row.ExportErr = exportErr.Error()
		progress("  export failed: %v\nlogbook's log ends with:\n%s", exportErr, srv.tail())
	} else {
		row.Export.ExpectRows = perOrg[Orgs[0].ID]
		progress("  %d rows (expected %d): ready in %s, downloaded in %s; RSS %s → peak %s", row.Export.Rows, row.Export.ExpectRows,
			row.Export.Produce.Round(time.Millisecond), row.Export.Total.Round(time.Millisecond), FormatBytes(row.ExportMem.Before), FormatBytes(row.ExportMem.Peak))
	}
	return nil
}

// isolation runs the end-to-end phase quiet and under heavy free-text searches.
func (rep *Report) isolation(ctx context.Context, cl *Client, stored int64, bodies [][]byte, bgRate float64, phase func(string, func() error) (PhaseMem, error)) error {
	cfg := rep.Cfg
	var err error
	progress("isolation: end to end quiet, then under %d concurrent heavy searches (%s each)", searchConc, cfg.E2E)
	rep.IsolationMem, err = phase("isolation", func() error {
		var err error
		rep.Isolation, err = cl.Isolation(ctx, bodies, bgRate, cfg.E2E, Orgs[0].ID, searchConc)
		return err
	})
	if err != nil {
		return err
	}
	if iso := rep.Isolation; iso != nil {
		iso.Size = stored
		progress("  ingest p99 %s → %s, visible p50 %s → %s, p99 %s → %s; %d searches, p50 %s, %d failed",
			FormatDuration(Percentile(iso.Quiet.Background.Lat, 99)), FormatDuration(Percentile(iso.Loaded.Background.Lat, 99)),
			FormatDuration(Percentile(iso.Quiet.Lat, 50)), FormatDuration(Percentile(iso.Loaded.Lat, 50)),
			FormatDuration(Percentile(iso.Quiet.Lat, 99)), FormatDuration(Percentile(iso.Loaded.Lat, 99)),
			len(iso.Searches), FormatDuration(Percentile(iso.Searches, 50)), iso.SearchErrs)
	}
	return nil
}

// repoRoot is the directory of the go.work the benchmark runs in.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: run from the repository (make bench)", dir)
		}
	}
}

// commitOf names the code measured: the commit, and whether the working tree had changes.
func commitOf(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += " with uncommitted changes"
	}
	return c
}

// alertsAndStreams runs the alert latency and log-stream catch-up phases.
func (rep *Report) alertsAndStreams(ctx context.Context, cl *Client, srv *Server, bodies [][]byte, phase func(string, func() error) (PhaseMem, error)) error {
	cfg := rep.Cfg
	var err error
	if !cfg.Skip["alert"] {
		// Alert rules: 2xx of a triggering event → the firing at a webhook, under background load.
		progress("alert latency: %s under %.0f events/s", cfg.AlertDur, cfg.AlertBg)
		rep.AlertMem, err = phase("alert latency", func() error {
			var err error
			rep.Alert, err = cl.AlertLatency(ctx, bodies, cfg.AlertBg, 32, cfg.AlertDur)
			return err
		})
		if err != nil {
			return err
		}
		progress("  p50 %s, p99 %s (%d probes, %d unseen; background %.0f events/s)", FormatDuration(Percentile(rep.Alert.Lat, 50)),
			FormatDuration(Percentile(rep.Alert.Lat, 99)), rep.Alert.Probes, rep.Alert.Unseen, rep.Alert.Background.Rate())
		if _, err := srv.WaitDrained(ctx, 200*time.Millisecond, 5*time.Minute); err != nil {
			return err
		}

	}
	if cfg.Skip["catchup"] {
		return nil
	}
	// Log streams: one stream catching up on a backlog after its destination was down.
	progress("log stream catch-up: %d events", cfg.CatchUpN)
	rep.CatchUpMem, err = phase("log stream catch-up", func() error {
		var err error
		rep.CatchUp, err = cl.CatchUp(ctx, cfg.CatchUpN)
		return err
	})
	if err != nil {
		return err
	}
	progress("  %.0f events/s (%d requests; first delivery %s after the destination came back)", rep.CatchUp.Rate(),
		rep.CatchUp.Requests, rep.CatchUp.FirstAfter.Round(time.Millisecond))

	return nil
}
