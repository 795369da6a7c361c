package export

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// BenchmarkExportCSV streams 200,000 stored events from the embedded engine through the CSV writer
// (go test -bench ExportCSV ./queryapi/export/): the export path without the object store.
func BenchmarkExportCSV(b *testing.B) {
	s := storetest.Shared(b)
	org := storetest.NewOrg(b)
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	const n = 200_000
	for batch := 0; batch < n/10_000; batch++ {
		recs := make([]*event.Record, 10_000)
		for i := range recs {
			k := batch*10_000 + i
			recs[i] = &event.Record{ID: fmt.Sprintf("01BENCH%019d", k), OrganizationID: org, ReceivedAt: base,
				Event: event.Event{Action: "user.signed_in", OccurredAt: base.Add(time.Duration(k) * time.Second),
					Actor:    event.Entity{ID: "user_1", Type: "user", Name: "Jon Smith", Metadata: map[string]any{"role": "admin"}},
					Targets:  []event.Entity{{ID: "team_1", Type: "team", Metadata: map[string]any{"plan": "pro"}}},
					Context:  event.Context{Location: "123.123.123.123", UserAgent: "Chrome/104.0.0.0"},
					Metadata: map[string]any{"attempts": 1, "reason": "password"}}}
		}
		if err := s.Insert(context.Background(), fmt.Sprintf("bench:%s:%d", org, batch), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		w, err := newCSVWriter(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Each(context.Background(), store.Filter{Org: org}, false, w.write); err != nil {
			b.Fatal(err)
		}
		if err := w.flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
}
