package benchmark

import (
	"strings"
	"testing"
	"time"
)

// step is a single-event step of n events over one second with every latency lat.
func step(conc int, keyed bool, n int64, lat time.Duration) SingleRow {
	st := &StepResult{Conc: conc, Keyed: keyed, OK: n, Elapsed: time.Second, Fail: &Failures{}}
	for range n {
		st.Lat = append(st.Lat, lat)
	}
	return SingleRow{StepResult: st}
}

func row(t *testing.T, tab *Table, prefix string) []string {
	t.Helper()
	for _, r := range tab.Rows {
		if strings.HasPrefix(r[0], prefix) {
			return r
		}
	}
	t.Fatalf("no row %q in\n%s", prefix, tab.Markdown())
	return nil
}

func TestTableSingleEventsBesideTheirCeilings(t *testing.T) {
	r := &Report{Cfg: &Config{Senders: 4, Lines: 100}}
	r.Ceil.Publish = []PublishCeiling{
		{Conc: 32, Keyed: false, Rate: 1000, Lat: []time.Duration{time.Millisecond}},
		{Conc: 32, Keyed: true, Rate: 800},
		{Conc: 256, Keyed: true, Rate: 12_000},
		{Conc: 256, Keyed: false, Rate: 5000},
	}
	r.Single = []SingleRow{
		step(32, false, 850, 10*time.Millisecond),   // 85 %, p99 10 ms: met
		step(32, true, 400, 10*time.Millisecond),    // 50 %: missed
		step(256, true, 9000, 10*time.Millisecond),  // 75 % and under 10,000/s: missed
		step(256, false, 4500, 30*time.Millisecond), // 90 %: met
	}
	tab := r.Table()
	for _, c := range []struct{ name, ceil, ratio, target string }{
		{"Single-event ingest, 32 concurrent, no Idempotency-Key", "1,000 msg/s", "85% of the ceiling", "≥ 80% of the ceiling, p99 < 20 ms: met"},
		{"Single-event ingest, 32 concurrent, with Idempotency-Key", "800 msg/s", "50% of the ceiling", "**missed** (50%)"},
		{"Single-event ingest, 256 concurrent, with Idempotency-Key", "12,000 msg/s", "75% of the ceiling", "≥ 10,000 events/s and ≥ 80% of the ceiling: **missed** (90% of 10,000/s; 75% of the ceiling)"},
		{"Single-event ingest, 256 concurrent, no Idempotency-Key", "5,000 msg/s", "90% of the ceiling", "met"},
	} {
		got := row(t, tab, c.name)
		if !strings.HasPrefix(got[2], c.ceil) || got[3] != c.ratio || !strings.HasSuffix(got[4], c.target) {
			t.Errorf("%s: got ceiling %q, ratio %q, target %q; want %q…, %q, …%q", c.name, got[2], got[3], got[4], c.ceil, c.ratio, c.target)
		}
	}
	row(t, tab, "Ceiling: the gateway's publish path, 256 concurrent, with Idempotency-Key")
}

func TestStageTableBudget(t *testing.T) {
	defer func(c int) { cores = c }(cores)
	cores = 2
	r := &Report{Cfg: &Config{}}
	r.Ceil.Insert = 40_000
	r.Ceil.Publish = []PublishCeiling{{Conc: 256, Keyed: true, Rate: 5000}, {Conc: 32, Keyed: false, Rate: 4000}}
	r.Single = []SingleRow{step(256, true, 4000, time.Millisecond), step(32, false, 3000, time.Millisecond)}
	r.Stages = []*StageCPU{
		{Phase: "single-c256-key", Events: 4000, CPU: 1.6, Elapsed: time.Second, Seconds: map[string]float64{"gateway": 0.4, "engine": 1.2}},
		{Phase: "single-c32-nokey", Events: 3000, CPU: 0.6, Elapsed: time.Second, Seconds: map[string]float64{"nats": 0.6}},
		{Phase: "bulk-1M", Events: 1_000_000, CPU: 100, Elapsed: 50 * time.Second, Seconds: map[string]float64{"writer": 100}},
	}
	tab := r.StageTable()
	for _, c := range []struct {
		row  string
		want []string
	}{
		{"gateway", []string{"100", "0", "0"}},
		{"engine", []string{"300", "0", "0"}},
		{"nats", []string{"0", "200", "0"}},
		{"writer", []string{"0", "0", "100"}},
		{"**Logbook, all stages**", []string{"**400**", "**200**", "**100**"}},
		// 256 keyed: max(80 % of 5,000, 10,000) = 10,000/s → 200 µs; 32: 80 % of 4,000 → 625 µs;
		// bulk: half the INSERT ceiling, 20,000/s → 100 µs.
		{"**budget at the target**", []string{"200 (at 10,000 ev/s)", "625 (at 3,200 ev/s)", "100 (at 20,000 ev/s)"}},
	} {
		got := row(t, tab, c.row)
		if strings.Join(got[1:], "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: got %q, want %q", c.row, got[1:], c.want)
		}
	}
}

func TestIndexTableShare(t *testing.T) {
	r := &Report{Cfg: &Config{}}
	r.Ceil.InsertIndexes = []IndexCost{{Without: "", Rate: 110}, {Without: "idx_q", Expr: "q ngrambf", Rate: 125},
		{Without: "all", Rate: 200}, {Rate: 90, Again: true}}
	tab := r.IndexTable()
	// The baseline is the mean of the two as-shipped runs, 100 rows/s. Without idx_q a row costs
	// 1/125 s instead of 1/100 s: the index is 20 % of the INSERT time.
	if got := row(t, tab, "idx_q"); got[3] != "125%" || got[4] != "20%" {
		t.Errorf("idx_q: got %q", got)
	}
	if got := row(t, tab, "all"); got[4] != "50%" {
		t.Errorf("all: got %q", got)
	}
	if got := row(t, tab, "none (as shipped), again"); got[3] != "90%" || got[4] != "" {
		t.Errorf("again: got %q", got)
	}
}
