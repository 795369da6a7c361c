package benchmark

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// PhaseMem is Logbook's resident memory around one phase: RSS at its start and the peak during it.
type PhaseMem struct {
	Before, Peak int64
	CPU          float64 // Logbook's CPU use during the phase, in cores (2.0 = both cores of 2)
}

// SingleRow is one single-event ingest step.
type SingleRow struct {
	*StepResult
	Mem PhaseMem
}

// SizeRow is everything measured at one data-set size.
type SizeRow struct {
	Size      int64
	Bulk      *BulkResult
	BulkMem   PhaseMem
	Search    []SearchResult
	SearchMem PhaseMem
	Export    *ExportResult
	ExportErr string
	ExportMem PhaseMem
}

// Profile is a CPU profile of Logbook taken during a phase, with its top entries.
type Profile struct {
	Name, Path, Top string
}

// Report is a whole run.
type Report struct {
	Cfg     *Config
	Commit  string // the code measured
	Machine []string
	Started time.Time
	Elapsed time.Duration
	Ceil    Ceilings
	Single  []SingleRow
	E2E     *E2EResult
	E2EMem  PhaseMem
	// Isolation is the end-to-end phase quiet and under heavy searches, on the full data set.
	Isolation    *IsolationResult
	IsolationMem PhaseMem
	Sizes        []SizeRow
	Rejected     uint64
	Profiles     []Profile
	Partial      bool // written mid-run, after a data-set size
	// Noise: share of the machine's CPU capacity used by processes other than the benchmark and
	// Logbook during the run, and the load averages at start and end.
	OtherCPU     float64
	BenchCPU     float64
	LogbookCPU   float64
	load0, load1 string

	srv                *Server
	busy0, self0, srv0 int64

	// Alert and CatchUp are the alert-rule and log-stream phases.
	runs         []*profileRun // profiled phases, for Stages
	Stages       []*StageCPU
	ProfileDir   string // where the profiles are kept
	ProfileBytes int64  // their size

	Alert      *AlertResult
	AlertMem   PhaseMem
	CatchUp    *CatchUpResult
	CatchUpMem PhaseMem
}

const clkTck = 100 // USER_HZ on Linux

func (r *Report) finish() {
	r.Elapsed = time.Since(r.Started)
	busy := busyTicks() - r.busy0
	self := procTicks("/proc/self/stat") - r.self0
	lb := r.srv.CPUTicks()
	capacity := r.Elapsed.Seconds() * clkTck * float64(runtime.NumCPU())
	r.OtherCPU = float64(busy-self-lb) / capacity
	r.BenchCPU = float64(self) / capacity
	r.LogbookCPU = float64(lb) / capacity
	r.load1 = loadAvg()
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// DescribeMachine lists cores, memory, CPU model, kernel, Go version and the disk holding dir.
func DescribeMachine(dir string) []string {
	model := "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	disk := "?"
	if out, err := exec.Command("df", "-h", "--output=source,fstype,size,avail", dir).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) == 2 {
			f := strings.Fields(lines[1])
			if len(f) == 4 {
				disk = fmt.Sprintf("%s, %s, %s (%s free)", f[0], f[1], f[2], f[3])
				dev := strings.TrimPrefix(f[0], "/dev/")
				if rot, err := os.ReadFile("/sys/block/" + dev + "/queue/rotational"); err == nil {
					disk += map[string]string{"0": ", non-rotational", "1": ", rotational"}[strings.TrimSpace(string(rot))]
				}
			}
		}
	}
	return []string{
		fmt.Sprintf("cores (nproc): %d", runtime.NumCPU()),
		"memory: " + mem,
		"CPU: " + model,
		"kernel: " + strings.TrimSpace(string(kernel)),
		"Go: " + runtime.Version(),
		"disk (data directory " + dir + "): " + disk,
	}
}

func (r *Report) summarizeProfiles(ctx context.Context) {
	for i, p := range r.Profiles {
		if !strings.HasPrefix(p.Name, "single-c32-nokey") && !strings.HasPrefix(p.Name, "single-c256-key") &&
			p.Name != "bulk-"+sizeName(r.Cfg.Sizes[0]) && !strings.HasPrefix(p.Name, "search-") && !strings.HasPrefix(p.Name, "export-") {
			continue
		}
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=20", p.Path).Output()
		if err != nil {
			r.Profiles[i].Top = "(pprof failed: " + err.Error() + ")"
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var keep []string
		for _, l := range lines {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
				continue
			}
			keep = append(keep, l)
		}
		r.Profiles[i].Top = strings.Join(keep, "\n")
	}
}

func latencies(d []time.Duration, ps ...float64) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("p%g %s", p, FormatDuration(Percentile(d, p))))
	}
	return strings.Join(parts, ", ")
}

func mem(m PhaseMem) string { return FormatBytes(m.Peak) + cpu(m) }

func cpu(m PhaseMem) string { return fmt.Sprintf("; CPU %.2f cores", m.CPU) }

func verdict(ok bool, miss string) string {
	if ok {
		return "met"
	}
	return "**missed** " + miss
}

func sizeName(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return FormatCount(n)
}

// Table is the one results table.
func (r *Report) Table() *Table {
	t := &Table{Header: []string{"Phase", "Logbook", "Ceiling (same run)", "Ratio", "Target", "Logbook peak RSS; CPU"}}
	c := r.Ceil
	t.Add("Ceiling: JetStream async publish, sync always", FormatRate(c.AsyncPublish, "msg")+fmt.Sprintf(" (%d-byte records)", c.PayloadLen), "", "", "", "(bench process)")
	t.Add("Ceiling: JetStream atomic batches of 1000, sync always", FormatRate(c.BatchPublish, "msg"), "", "", "", "(bench process)")
	for _, p := range c.Publish {
		res := FormatRate(p.Rate, "msg") + "; " + latencies(p.Lat, 50, 99)
		if p.Err != "" {
			res += "; " + p.Err
		}
		t.Add(fmt.Sprintf("Ceiling: the gateway's publish path, %d concurrent, %s", p.Conc, keyName(p.Keyed)), res, "", "", "", "(bench process)")
	}
	t.Add("Ceiling: ClickHouse INSERT (chDB, 10k-row store.Insert)", FormatRate(c.Insert, "rows")+" ("+FormatCount(c.InsertRows)+" rows; "+
		fmt.Sprintf("%.1f µs CPU per row", float64(c.InsertCPU.Nanoseconds())/1e3)+")", "", "", "", "(bench process)")
	for _, s := range r.Single {
		rate := s.Rate()
		p99 := Percentile(s.Lat, 99)
		res := FormatRate(rate, "events") + "; " + latencies(s.Lat, 50, 99)
		if n := s.Fail.Total(); n > 0 {
			res += fmt.Sprintf("; %d failed (%s)", n, s.Fail)
		}
		ceil, ratio, target := "", "", ""
		if pc := c.publishCeiling(s.Conc, s.Keyed); pc != nil && pc.Rate > 0 {
			ceil = FormatRate(pc.Rate, "msg") + "; " + latencies(pc.Lat, 50, 99)
			ratio = FormatRatio(rate, pc.Rate) + " of the ceiling"
			ok := rate >= 0.8*pc.Rate
			target = "≥ 80% of the ceiling"
			miss := fmt.Sprintf("(%s)", FormatRatio(rate, pc.Rate))
			switch {
			case s.Conc == 32 && !s.Keyed:
				target += ", p99 < 20 ms"
				ok = ok && p99 < 20*time.Millisecond
				miss = fmt.Sprintf("(%s, p99 %s)", FormatRatio(rate, pc.Rate), FormatDuration(p99))
			case s.Conc == 256 && s.Keyed:
				target = "≥ 10,000 events/s and " + target
				ok = ok && rate >= 10_000
				miss = fmt.Sprintf("(%s of 10,000/s; %s of the ceiling)", FormatRatio(rate, 10_000), FormatRatio(rate, pc.Rate))
			}
			target += ": " + verdict(ok, miss)
		}
		t.Add(fmt.Sprintf("Single-event ingest, %d concurrent, %s", s.Conc, keyName(s.Keyed)), res, ceil, ratio, target, mem(s.Mem))
	}
	if e := r.E2E; e != nil {
		res := latencies(e.Lat, 50, 99) + fmt.Sprintf(" (%d probes", e.Probes)
		if e.Unseen > 0 {
			res += fmt.Sprintf(", **%d never seen**", e.Unseen)
		}
		res += fmt.Sprintf(")")
		p99 := Percentile(e.Lat, 99)
		t.Add(fmt.Sprintf("End to end: 2xx → visible in search, under %s background", FormatRate(e.Background.Rate(), "events")),
			res, "", "", "p99 ≤ 1 s: "+verdict(p99 > 0 && p99 <= time.Second && e.Unseen == 0, "("+FormatDuration(p99)+")"), mem(r.E2EMem))
	}
	if a := r.Alert; a != nil {
		res := latencies(a.Lat, 50, 99) + fmt.Sprintf(" (%d alerts", a.Probes)
		if a.Unseen > 0 {
			res += fmt.Sprintf(", **%d never delivered**", a.Unseen)
		}
		res += ")"
		p99 := Percentile(a.Lat, 99)
		t.Add(fmt.Sprintf("Alert: 2xx of the triggering event → firing at a webhook, under %s background", FormatRate(a.Background.Rate(), "events")),
			res, "", "", "p99 ≤ 2 s: "+verdict(p99 > 0 && p99 <= 2*time.Second && a.Unseen == 0, ""), mem(r.AlertMem))
	}
	if cu := r.CatchUp; cu != nil {
		t.Add(fmt.Sprintf("Log stream catch-up: a backlog of %s delivered to an HTTP endpoint after an outage", FormatCount(int64(cu.Events))),
			fmt.Sprintf("%s (%d requests in %s; first delivery %s after the endpoint returned)", FormatRate(cu.Rate(), "events"),
				cu.Requests, cu.Drain.Round(10*time.Millisecond), cu.FirstAfter.Round(10*time.Millisecond)), "", "", "", mem(r.CatchUpMem))
	}
	for _, s := range r.Sizes {
		b := s.Bulk
		e2e := float64(b.Events) / b.VisibleIn.Seconds()
		acc := float64(b.Accepted) / b.AcceptedIn.Seconds()
		res := fmt.Sprintf("%s end to end (%s events visible in %s); accepted at %s, request %s", FormatRate(e2e, "events"),
			FormatCount(b.Events), b.VisibleIn.Round(100*time.Millisecond), FormatRate(acc, "events"), latencies(b.ReqLat, 50, 99))
		if b.Failed > 0 || b.Fail.Total() > 0 {
			res += fmt.Sprintf("; %d lines failed (%s)", b.Failed, b.Fail)
		}
		t.Add(fmt.Sprintf("Bulk ingest to %s stored, %d senders × %d lines", sizeName(s.Size), r.Cfg.Senders, r.Cfg.Lines), res,
			"INSERT "+FormatRate(c.Insert, "rows")+"; batch publish "+FormatRate(c.BatchPublish, "msg"),
			FormatRatio(e2e, c.Insert)+" of INSERT; accepted "+FormatRatio(acc, c.BatchPublish)+" of batch",
			"≥ 50% of INSERT: "+verdict(e2e >= c.Insert/2, fmt.Sprintf("(%.0f%% of the 50%%)", e2e/(c.Insert/2)*100)), mem(s.BulkMem))
		for i, q := range s.Search {
			target := ""
			p95 := Percentile(q.Lat, 95)
			if s.Size >= 10_000_000 {
				target = "p95 < 50 ms at 10M: " + verdict(p95 < 50*time.Millisecond, fmt.Sprintf("(%.1f× the budget)", float64(p95)/float64(50*time.Millisecond)))
			} else if i == 0 {
				target = "(target applies at 10M)"
			}
			peak := ""
			if i == 0 {
				peak = mem(s.SearchMem)
			}
			t.Add(fmt.Sprintf("Search at %s: %s", sizeName(s.Size), q.Kind), latencies(q.Lat, 50, 95)+fmt.Sprintf(" (%.0f hits/page)", q.AvgHits), "", "", target, peak)
		}
		if s.ExportErr != "" {
			t.Add(fmt.Sprintf("Export at %s: one organization, CSV", sizeName(s.Size)), "**failed**: "+truncate(s.ExportErr, 200), "", "",
				"≥ 200,000 rows/s: **missed** (failed)", FormatBytes(s.ExportMem.Before)+" → "+FormatBytes(s.ExportMem.Peak))
			continue
		}
		x := s.Export
		if x == nil { // export left out (-skip export)
			continue
		}
		prod := float64(x.Rows) / x.Produce.Seconds()
		all := float64(x.Rows) / x.Total.Seconds()
		res = fmt.Sprintf("%s rows: requested → ready %s (%s), → downloaded %s (%s); %s CSV", FormatCount(x.Rows),
			x.Produce.Round(10*time.Millisecond), FormatRate(prod, "rows"), x.Total.Round(10*time.Millisecond), FormatRate(all, "rows"), FormatBytes(x.Bytes))
		if x.Rows != x.ExpectRows {
			res += fmt.Sprintf("; **expected %s rows**", FormatCount(x.ExpectRows))
		}
		rise := s.ExportMem.Peak - s.ExportMem.Before
		t.Add(fmt.Sprintf("Export at %s: one organization, CSV", sizeName(s.Size)), res, "", "",
			"≥ 200,000 rows/s downloaded, RSS rise < 100 MiB: "+verdict(all >= 200_000 && rise < 100<<20 && x.Rows == x.ExpectRows,
				fmt.Sprintf("(%s of the rate; rise %s)", FormatRatio(all, 200_000), FormatBytes(rise))),
			FormatBytes(s.ExportMem.Before)+" → "+FormatBytes(s.ExportMem.Peak)+" (rise "+FormatBytes(rise)+")"+cpu(s.ExportMem))
	}
	if iso := r.Isolation; iso != nil && iso.Quiet != nil && iso.Loaded != nil {
		qi, li := Percentile(iso.Quiet.Background.Lat, 99), Percentile(iso.Loaded.Background.Lat, 99)
		qv, lv := Percentile(iso.Quiet.Lat, 99), Percentile(iso.Loaded.Lat, 99)
		qv50, lv50 := Percentile(iso.Quiet.Lat, 50), Percentile(iso.Loaded.Lat, 50)
		ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.2f×", float64(b)/float64(max(a, 1))) }
		within := func(a, b time.Duration) bool { return b <= 2*a }
		t.Add(fmt.Sprintf("Isolation at %s: ingest (paced %s) quiet → under %d heavy q= searches", sizeName(iso.Size),
			FormatRate(iso.Quiet.Background.Rate(), "events"), iso.SearchConc),
			"request p99 "+FormatDuration(qi)+" → "+FormatDuration(li), "", ratio(qi, li),
			"within 2×: "+verdict(within(qi, li), "("+ratio(qi, li)+")"), mem(r.IsolationMem))
		t.Add(fmt.Sprintf("Isolation at %s: 2xx → visible, quiet → under %d heavy q= searches", sizeName(iso.Size), iso.SearchConc),
			"p50 "+FormatDuration(qv50)+" → "+FormatDuration(lv50)+"; p99 "+FormatDuration(qv)+" → "+FormatDuration(lv), "", ratio(qv, lv),
			"within 2×: "+verdict(within(qv, lv), "("+ratio(qv, lv)+")"), "")
		res := fmt.Sprintf("%d searches, %s", len(iso.Searches), latencies(iso.Searches, 50, 95))
		if iso.SearchErrs > 0 {
			res += fmt.Sprintf("; %d failed", iso.SearchErrs)
		}
		t.Add(fmt.Sprintf("Isolation at %s: the heavy searches (q = a rare target id, %d at once)", sizeName(iso.Size), iso.SearchConc), res, "", "", "", "")
	}
	if peak, where := r.PeakRSS(); peak > 0 {
		t.Add("Peak RSS of the process, whole run", FormatBytes(peak)+" (during "+where+")", "", "",
			"≤ 1.5 GiB: "+verdict(peak <= 3<<29, "("+FormatBytes(peak)+")"), "")
	}
	return t
}

// PeakRSS is the highest resident set Logbook reached in any phase, and the phase.
func (r *Report) PeakRSS() (int64, string) {
	var peak int64
	var where string
	see := func(m PhaseMem, name string) {
		if m.Peak > peak {
			peak, where = m.Peak, name
		}
	}
	for _, s := range r.Single {
		see(s.Mem, fmt.Sprintf("single-event ingest, %d concurrent, %s", s.Conc, keyName(s.Keyed)))
	}
	see(r.E2EMem, "end to end")
	see(r.AlertMem, "alert latency")
	see(r.CatchUpMem, "log stream catch-up")
	for _, s := range r.Sizes {
		see(s.BulkMem, "bulk ingest to "+sizeName(s.Size))
		see(s.SearchMem, "search at "+sizeName(s.Size))
		see(s.ExportMem, "export at "+sizeName(s.Size))
	}
	see(r.IsolationMem, "isolation")
	return peak, where
}

// IndexTable is the INSERT ceiling without each skip index, beside the table as shipped (the
// mean of its two measurements, first and last, so that drift over the series cancels out).
func (r *Report) IndexTable() *Table {
	idx := r.Ceil.InsertIndexes
	if len(idx) == 0 {
		return nil
	}
	t := &Table{Header: []string{"Skip index left out", "Index", "INSERT rows/s", "vs the table as shipped", "Index's share of the INSERT time"}}
	var base float64
	var n int
	for _, v := range idx {
		if v.Without == "" {
			base += v.Rate
			n++
		}
	}
	base /= float64(max(n, 1))
	for _, v := range idx {
		name, share := v.Without, ""
		switch {
		case v.Again:
			name = "none (as shipped), again at the end"
		case name == "":
			name = "none (as shipped)"
		case base > 0 && v.Rate > 0:
			share = fmt.Sprintf("%.0f%%", (1-base/v.Rate)*100)
		}
		t.Add(name, v.Expr, FormatRate(v.Rate, "rows"), FormatRatio(v.Rate, base), share)
	}
	return t
}

// cores is the machine's CPU count: the budget per event is cores seconds of CPU per second.
var cores = runtime.NumCPU()

// StageTable is CPU per event per stage in each profiled phase, with the budget the targets imply.
func (r *Report) StageTable() *Table {
	if len(r.Stages) == 0 {
		return nil
	}
	t := &Table{Header: []string{"µs CPU per event"}}
	for _, s := range r.Stages {
		t.Header = append(t.Header, s.Phase)
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d.Nanoseconds())/1e3) }
	for _, st := range Stages {
		row := []string{st}
		for _, s := range r.Stages {
			row = append(row, us(s.PerEvent(st)))
		}
		t.Add(row...)
	}
	row := []string{"**Logbook, all stages**"}
	for _, s := range r.Stages {
		row = append(row, "**"+us(s.Total())+"**")
	}
	t.Add(row...)
	row = []string{"the benchmark client (same machine)"}
	for _, s := range r.Stages {
		row = append(row, us(time.Duration(s.Bench/float64(max(s.Events, 1))*1e9)))
	}
	t.Add(row...)
	row = []string{"events; rate; CPU in use"}
	for _, s := range r.Stages {
		rate := r.phaseRate(s.Phase)
		row = append(row, fmt.Sprintf("%s; %s; %.2f cores", FormatCount(s.Events), FormatRate(rate, "ev"), s.CPU/s.Elapsed.Seconds()))
	}
	t.Add(row...)
	row = []string{fmt.Sprintf("**budget at the target**: %d cores ÷ the target rate (all stages and the client)", cores)}
	for _, s := range r.Stages {
		if tr := r.targetRate(s.Phase); tr > 0 {
			row = append(row, fmt.Sprintf("%.0f (at %s)", float64(cores)*1e6/tr, FormatRate(tr, "ev")))
		} else {
			row = append(row, "")
		}
	}
	t.Add(row...)
	return t
}

// phaseRate is the rate a profiled phase reached (accepted events/s for single events, stored
// events/s end to end for bulk).
func (r *Report) phaseRate(phase string) float64 {
	for _, s := range r.Single {
		if phase == singleName(s.Conc, s.Keyed) {
			return s.Rate()
		}
	}
	for _, s := range r.Sizes {
		if phase == "bulk-"+sizeName(s.Size) && s.Bulk != nil {
			return float64(s.Bulk.Events) / s.Bulk.VisibleIn.Seconds()
		}
	}
	return 0
}

// targetRate is the rate a phase's target asks for: 80 % of the same-run publish ceiling for
// single events (and at least 10,000/s at 256 with keys), half the INSERT ceiling for bulk.
func (r *Report) targetRate(phase string) float64 {
	for _, s := range r.Single {
		if phase == singleName(s.Conc, s.Keyed) {
			if pc := r.Ceil.publishCeiling(s.Conc, s.Keyed); pc != nil {
				tr := 0.8 * pc.Rate
				if s.Conc == 256 && s.Keyed {
					tr = max(tr, 10_000)
				}
				return tr
			}
		}
	}
	if strings.HasPrefix(phase, "bulk-") {
		return r.Ceil.Insert / 2
	}
	return 0
}

func singleName(conc int, keyed bool) string {
	return fmt.Sprintf("single-c%d-%s", conc, map[bool]string{false: "nokey", true: "key"}[keyed])
}

const (
	beginMarker = "<!-- bench:begin (generated by make bench; edit outside these markers) -->"
	endMarker   = "<!-- bench:end -->"
)

// Write puts the report between the markers of path, keeping what is written around them.
func (r *Report) Write(path string, t *Table) error {
	var b strings.Builder
	cmd := "go run ./deploy/bench " + strings.Join(r.Cfg.Args, " ")
	if os.Getenv("MAKELEVEL") != "" {
		cmd = "make bench"
		if r.Cfg.Quick {
			cmd = "BENCH_QUICK=1 make bench"
		}
		cmd += " (go run ./deploy/bench" + strings.TrimRight(" "+strings.Join(r.Cfg.Args, " "), " ") + ")"
	}
	fmt.Fprintf(&b, "Run of %s UTC, %s in all, of commit %s. Command: `%s`", r.Started.UTC().Format("2006-01-02 15:04"), r.Elapsed.Round(time.Second), r.Commit, cmd)
	if r.Cfg.Quick {
		b.WriteString(" — **quick mode (smoke run), not the reference figures**")
	}
	if r.Partial {
		b.WriteString(" — **partial: written after " + sizeName(r.Sizes[len(r.Sizes)-1].Size) + " stored events, the run went on**")
	}
	b.WriteString(".\n\nMachine:\n")
	for _, m := range r.Machine {
		b.WriteString("- " + m + "\n")
	}
	fmt.Fprintf(&b, "\nNoise: during the run, processes other than the benchmark and Logbook used %.0f%% of the machine's CPU capacity (the benchmark client %.0f%%, Logbook %.0f%%); load average %s at the start, %s at the end.\n\n",
		r.OtherCPU*100, r.BenchCPU*100, r.LogbookCPU*100, r.load0, r.load1)
	b.WriteString(t.Markdown())
	if it := r.IndexTable(); it != nil {
		fmt.Fprintf(&b, "\nINSERT ceiling without each skip index (%s rows each into a fresh copy of the events table, 10k-row store.Insert, same rows for every copy; the table as shipped measured first and last, their mean the baseline; a negative share is noise larger than the index's cost):\n\n", FormatCount(r.Cfg.IndexRows))
		b.WriteString(it.Markdown())
	}
	if st := r.StageTable(); st != nil {
		b.WriteString("\nCPU per event by stage (CPU profiles of Logbook over each phase, single-event steps until the pipeline had stored what they took in; samples by goroutine label and stack, scaled to the process's CPU time; `engine` is everything inside libchdb, `runtime` the Go garbage collector and scheduler outside any stage):\n\n")
		b.WriteString(st.Markdown())
	}
	fmt.Fprintf(&b, "\nSettings: single-event steps of %s each; end to end %s, 10 probes/s, list polled every 20 ms; "+
		"search: %d sequential queries per kind after 3 warm-up queries, pages of 50, organization %s (%.0f%% of the events); "+
		"data set: %d organizations, %d actions (Zipf), %d users per organization (Zipf), occurred_at over the past year in order; "+
		"events rejected by the validator during the run: %d.\n",
		r.Cfg.Step, r.Cfg.E2E, r.Cfg.SearchN, Orgs[0].ID, Orgs[0].Share*100, len(Orgs), len(Actions), ActorsPerOrg, r.Rejected)
	if len(r.Profiles) > 0 {
		fmt.Fprintf(&b, "\nCPU profiles of Logbook, one per phase, kept in `%s` (%d KiB; `go tool pprof -top <file>`); the top of some (flat/cumulative):\n", r.ProfileDir, r.ProfileBytes>>10)
		for _, p := range r.Profiles {
			if p.Top == "" {
				continue
			}
			fmt.Fprintf(&b, "\n<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n", p.Name, p.Top)
		}
	}
	old, _ := os.ReadFile(path)
	doc := ReplaceBetween(string(old), beginMarker, endMarker, b.String(), fallbackDoc)
	return os.WriteFile(path, []byte(doc), 0o644)
}

const fallbackDoc = `# Benchmarks

` + "`make bench`" + ` (deploy/bench) builds and starts the single-process Logbook on a fresh data directory and
measures it over HTTP; ` + "`BENCH_QUICK=1 make bench`" + ` is a smoke run with small sizes.

` + beginMarker + `
` + endMarker + `
`
