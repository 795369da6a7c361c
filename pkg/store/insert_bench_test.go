package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// BenchmarkInsert10k inserts batches of 10,000 audit-like events into the embedded engine, as the
// writer does (go test -bench Insert10k ./pkg/store/).
func BenchmarkInsert10k(b *testing.B) {
	s := storetest.Shared(b)
	org := storetest.NewOrg(b)
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	recs := make([]*event.Record, 10_000)
	for i := range recs {
		recs[i] = &event.Record{ID: fmt.Sprintf("01INS%021d", i), OrganizationID: org, ReceivedAt: base,
			Event: event.Event{Action: "user.signed_in", OccurredAt: base.Add(time.Duration(i) * time.Second),
				Actor:    event.Entity{ID: "user_1", Type: "user", Name: "Jon Smith", Metadata: map[string]any{"role": "admin"}},
				Targets:  []event.Entity{{ID: "team_1", Type: "team", Metadata: map[string]any{"plan": "pro"}}},
				Context:  event.Context{Location: "123.123.123.123", UserAgent: "Chrome/104.0.0.0"},
				Metadata: map[string]any{"attempts": 1, "reason": "password"}}}
	}
	b.ResetTimer()
	for i := range b.N {
		if err := s.Insert(context.Background(), fmt.Sprintf("bench:%s:%d", org, i), recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(recs)*b.N)/b.Elapsed().Seconds(), "rows/s")
}
