package benchmark

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	if got := Percentile(nil, 50); got != 0 {
		t.Fatalf("empty: got %v", got)
	}
	d := make([]time.Duration, 0, 100)
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("p%v: got %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("single: got %v", got)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{FormatCount(0), "0"},
		{FormatCount(999), "999"},
		{FormatCount(1000), "1,000"},
		{FormatCount(1234567), "1,234,567"},
		{FormatCount(-1234), "-1,234"},
		{FormatRate(12345.6, "events"), "12,346 events/s"},
		{FormatDuration(812 * time.Microsecond), "812µs"},
		{FormatDuration(4210 * time.Microsecond), "4.21ms"},
		{FormatDuration(42100 * time.Microsecond), "42.1ms"},
		{FormatDuration(1350 * time.Millisecond), "1.35s"},
		{FormatBytes(300 << 20), "300 MiB"},
		{FormatBytes(12 << 30), "12.0 GiB"},
		{FormatRatio(50, 200), "25%"},
		{FormatRatio(1, 200), "0.5%"},
		{FormatRatio(1, 0), "–"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := Table{Header: []string{"Phase", "Result"}}
	tb.Add("single-event ingest, c=16", "9,000 events/s")
	tb.Add("a|b") // escaped pipe, missing cell
	got := tb.Markdown()
	want := "" +
		"| Phase                     | Result         |\n" +
		"| ------------------------- | -------------- |\n" +
		"| single-event ingest, c=16 | 9,000 events/s |\n" +
		"| a\\|b                      |                |\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestReplaceBetween(t *testing.T) {
	const b, e = "<!-- begin -->", "<!-- end -->"
	doc := "# T\nintro\n" + b + "\nold\n" + e + "\nanalysis\n"
	got := ReplaceBetween(doc, b, e, "new\n", "")
	if want := "# T\nintro\n" + b + "\nnew\n" + e + "\nanalysis\n"; got != want {
		t.Fatalf("got %q", got)
	}
	got = ReplaceBetween("", b, e, "new\n", "# F\n"+b+"\n"+e+"\n")
	if !strings.Contains(got, "# F\n"+b+"\nnew\n"+e) {
		t.Fatalf("fallback: got %q", got)
	}
}
