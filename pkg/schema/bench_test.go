package schema_test

import (
	"encoding/json"
	"fmt"
	"regexp/syntax"
	"strings"
	"syscall"
	"testing"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
)

// worstAccepted are definitions built to cost as much as MaxCost and MaxObjectCost allow, each with
// the event that makes it work hardest: the per-event cost bound in practice.
func worstAccepted(tb testing.TB) map[string]struct {
	def string
	ev  *event.Event
} {
	out := map[string]struct {
		def string
		ev  *event.Event
	}{}
	numbers := func(keys int) map[string]any {
		m := map[string]any{}
		for i := range keys {
			m[fmt.Sprintf("k%d", i)] = json.Number("1")
		}
		return m
	}
	full := func(meta func() map[string]any) *event.Event {
		ev := &event.Event{Action: "bench.worst", Actor: event.Entity{Metadata: meta()}, Metadata: meta()}
		for range schema.MaxTargets {
			ev.Targets = append(ev.Targets, event.Entity{Type: "t", Metadata: meta()})
		}
		return ev
	}
	everywhere := func(s string) string {
		return fmt.Sprintf(`{"actor":{"metadata":%s},"targets":[{"type":"t","metadata":%s}],"metadata":%s}`, s, s, s)
	}

	// Steps: every member of every object applies k subschemas; all of them fail on one member of
	// each object (a number where strings are expected), so no object stops the others early.
	objects := int64(2 + schema.MaxTargets)
	k := int((schema.MaxCost/objects-1)/schema.MaxMetadataKeys) - 1
	branches := strings.TrimSuffix(strings.Repeat(`{"type":"string"},`, k), ",")
	oneWrong := func() map[string]any {
		m := map[string]any{}
		for i := range schema.MaxMetadataKeys - 1 {
			m[fmt.Sprintf("k%d", i)] = ""
		}
		m["n"] = json.Number("1")
		return m
	}
	out["steps: one member of each object fails"] = struct {
		def string
		ev  *event.Event
	}{everywhere(`{"additionalProperties":{"allOf":[` + branches + `]}}`), full(oneWrong)}
	out["steps: all members fail"] = struct {
		def string
		ev  *event.Event
	}{everywhere(`{"additionalProperties":{"allOf":[` + branches + `]}}`), full(func() map[string]any { return numbers(schema.MaxMetadataKeys) })}

	// Fixed work: the deepest doubling $ref chain accepted, on every object.
	chain := func(n int) string {
		defs := []string{`"d0":{"required":["absent"]}`}
		for i := 1; i <= n; i++ {
			defs = append(defs, fmt.Sprintf(`"d%d":{"allOf":[{"$ref":"#/$defs/d%d"},{"$ref":"#/$defs/d%d"}]}`, i, i-1, i-1))
		}
		return everywhere(`{"$defs":{` + strings.Join(defs, ",") + `},"$ref":"#/$defs/d` + fmt.Sprint(n) + `"}`)
	}
	n := 1
	for {
		if _, err := schema.ParseDefinition([]byte(chain(n + 1))); err != nil {
			break
		}
		n++
	}
	out[fmt.Sprintf("fixed: 2^%d $ref chain on every object", n)] = struct {
		def string
		ev  *event.Event
	}{chain(n), full(func() map[string]any { return map[string]any{} })}

	// Patterns: an unanchored pattern whose every start position keeps hundreds of threads alive,
	// as large as the bounds allow, read over MaxValidatedRunes characters of 'a'.
	size := 1
	for {
		p := fmt.Sprintf(`(?:[a-z]{1,%d}){5}b`, size+1)
		re, _ := syntax.Parse(p, syntax.Perl)
		prog, _ := syntax.Compile(re.Simplify())
		if int64(len(prog.Inst))*schema.MaxValidatedRunes/128+objects*(1+2*schema.MaxMetadataKeys) > schema.MaxCost ||
			len(prog.Inst)*schema.MaxValueRunes/128 > schema.MaxObjectCost-200 {
			break
		}
		size++
	}
	pattern := fmt.Sprintf(`(?:[a-z]{1,%d}){5}b`, size)
	ev := full(func() map[string]any { return map[string]any{} })
	for i := range schema.MaxValidatedRunes/schema.MaxValueRunes - 1 {
		ev.Targets[i/schema.MaxMetadataKeys].Metadata[fmt.Sprintf("k%d", i)] = strings.Repeat("a", schema.MaxValueRunes)
	}
	out["patterns: "+pattern+" on every string"] = struct {
		def string
		ev  *event.Event
	}{everywhere(`{"additionalProperties":{"pattern":"` + pattern + `"}}`), ev}
	return out
}

// BenchmarkWorstAcceptedEvent measures the worst accepted definitions against their worst events:
// what one event can cost at most. cpu-ns/op is the process's CPU time per event (on a shared
// machine it is steadier than wall time).
func BenchmarkWorstAcceptedEvent(b *testing.B) {
	for name, w := range worstAccepted(b) {
		b.Run(name, func(b *testing.B) {
			d, err := schema.ParseDefinition([]byte(w.def))
			if err != nil {
				b.Fatal(err)
			}
			c, err := schema.Compile(d)
			if err != nil {
				b.Fatal(err)
			}
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			for b.Loop() {
				c.Validate(w.ev)
			}
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := syscall.TimevalToNsec(after.Utime) + syscall.TimevalToNsec(after.Stime) - syscall.TimevalToNsec(before.Utime) - syscall.TimevalToNsec(before.Stime)
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(c.Cost()), "steps")
		})
	}
}

// BenchmarkRealisticEvent is the richest realistic definition against a full event whose every
// value is wrong.
func BenchmarkRealisticEvent(b *testing.B) {
	d, err := schema.ParseDefinition([]byte(realisticSchemas()["rich, ten target types"]))
	if err != nil {
		b.Fatal(err)
	}
	c, _ := schema.Compile(d)
	ev := &event.Event{Action: "bench.rich"}
	meta := func() map[string]any {
		m := map[string]any{}
		for i := range schema.MaxMetadataKeys {
			m[fmt.Sprintf("x_key_%d", i)] = strings.Repeat("a", 6)
		}
		return m
	}
	ev.Actor.Metadata, ev.Metadata = meta(), meta()
	for i := range schema.MaxTargets {
		ev.Targets = append(ev.Targets, event.Entity{Type: d.Targets[i%len(d.Targets)].Type, Metadata: meta()})
	}
	for b.Loop() {
		c.Validate(ev)
	}
	b.ReportMetric(float64(c.Cost()), "steps")
}
