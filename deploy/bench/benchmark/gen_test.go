package benchmark

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

func TestGenDeterministicAndRealistic(t *testing.T) {
	end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	g := &Gen{End: end, Span: 365 * 24 * time.Hour, N: 1000, Seed: 1}
	total := 0
	prev := time.Time{}
	for i := range int64(1000) {
		a, b := g.At(i), g.At(i)
		ba := a.Body()
		if !bytes.Equal(ba, b.Body()) {
			t.Fatalf("event %d differs between calls", i)
		}
		total += len(ba)
		if a.Event.OccurredAt.After(end) || a.Event.OccurredAt.Before(end.Add(-g.Span)) {
			t.Fatalf("event %d at %s is outside the span", i, a.Event.OccurredAt)
		}
		if i%100 == 0 { // in order, but for up to a minute of jitter
			if a.Event.OccurredAt.Before(prev) {
				t.Fatalf("events do not run in time order: %s after %s", a.Event.OccurredAt, prev)
			}
			prev = a.Event.OccurredAt.Add(time.Minute)
		}
	}
	t.Logf("average body %d bytes", total/1000)
	if avg := total / 1000; avg < 450 || avg > 800 {
		t.Fatalf("average body is %d bytes, want about 600", avg)
	}
	if k := nodeKey(rand.New(rand.NewPCG(1, 2))); len(k) != len("workos-node-")+36 {
		t.Fatalf("idempotency key %q", k)
	}
}
