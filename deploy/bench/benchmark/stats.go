package benchmark

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of d, which it sorts in
// place. It returns 0 for an empty slice.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	if !slices.IsSorted(d) {
		slices.Sort(d)
	}
	rank := int(math.Ceil(p / 100 * float64(len(d))))
	rank = min(max(rank, 1), len(d))
	return d[rank-1]
}

// FormatDuration renders a latency with three significant digits: 812µs, 4.21ms, 1.35s.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// FormatCount renders n with thousands separators: 1234567 → 1,234,567.
func FormatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatRate renders a per-second rate rounded to a whole number: 12,345/s.
func FormatRate(perSec float64, unit string) string {
	return FormatCount(int64(math.Round(perSec))) + " " + unit + "/s"
}

// FormatBytes renders a byte count in MiB (or GiB from 10 GiB on).
func FormatBytes(n int64) string {
	const mib = 1 << 20
	if n >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return FormatCount((n+mib/2)/mib) + " MiB"
}

// FormatRatio renders measured/ceiling as a percentage; "–" when the ceiling is unknown.
func FormatRatio(measured, ceiling float64) string {
	if ceiling <= 0 || math.IsNaN(measured) {
		return "–"
	}
	r := measured / ceiling * 100
	if r < 10 {
		return fmt.Sprintf("%.1f%%", r)
	}
	return fmt.Sprintf("%.0f%%", r)
}

// Table is a Markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row; missing cells are left empty.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Markdown renders t with columns padded to equal width (by rune count) so it reads as well in a
// terminal as rendered. Pipes inside cells are escaped.
func (t *Table) Markdown() string {
	cols := len(t.Header)
	for _, r := range t.Rows {
		cols = max(cols, len(r))
	}
	cell := func(r []string, i int) string {
		if i < len(r) {
			return strings.ReplaceAll(r[i], "|", `\|`)
		}
		return ""
	}
	width := make([]int, cols)
	for _, r := range append([][]string{t.Header}, t.Rows...) {
		for i := range cols {
			width[i] = max(width[i], 3, len([]rune(cell(r, i))))
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for i := range cols {
			c := cell(r, i)
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		b.WriteString("\n")
	}
	line(t.Header)
	b.WriteString("|")
	for i := range cols {
		b.WriteString(" " + strings.Repeat("-", width[i]) + " |")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		line(r)
	}
	return b.String()
}

// ReplaceBetween returns doc with the text between the begin and end marker lines replaced by
// body (markers kept). When doc lacks the markers, it returns fallback with body between them.
func ReplaceBetween(doc, begin, end, body, fallback string) string {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		doc = fallback
		i = strings.Index(doc, begin)
		j = strings.Index(doc, end)
		if i < 0 || j < i {
			return doc + "\n" + begin + "\n" + body + end + "\n"
		}
	}
	return doc[:i+len(begin)] + "\n" + body + doc[j:]
}
