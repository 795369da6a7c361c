package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/store/storemetrics"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// The metrics decorator sees what the real engine does: batch sizes of stored INSERTs, failed
// INSERTs, and query latency by kind.
func TestStoreMetricsDecorator(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	s := storetest.Shared(t).Decorate(storemetrics.Decorator(reg, "writer"))
	org := storetest.NewOrg(t)
	base := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)

	require.NoError(t, s.Insert(ctx, "test:"+org+":m1", []*event.Record{record(org, 1, base), record(org, 2, base)}))
	require.NoError(t, s.Insert(ctx, "test:"+org+":m2", []*event.Record{record(org, 3, base)}))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.Error(t, s.Insert(cancelled, "test:"+org+":m3", []*event.Record{record(org, 4, base)}))
	require.NoError(t, s.Ping(ctx))
	_, err := s.Search(ctx, store.Filter{Org: org}, true, nil, 10)
	require.NoError(t, err)

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP writer_insert_errors_total INSERTs into ClickHouse that failed (each is retried).
# TYPE writer_insert_errors_total counter
writer_insert_errors_total 1
`), "writer_insert_errors_total"))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				name := mf.GetName()
				if len(m.GetLabel()) > 0 {
					name += "/" + m.GetLabel()[0].GetValue()
				}
				got[name] = h.GetSampleCount()
				if name == "writer_batch_rows" {
					assert.Equal(t, 3.0, h.GetSampleSum(), "rows of the two stored batches")
				}
			}
		}
	}
	assert.Equal(t, map[string]uint64{
		"writer_batch_rows":                   2,
		"writer_insert_duration_seconds":      3,
		"writer_query_duration_seconds/query": 4, // the ping and the search: the last day, 8 days (both empty), the rest
	}, got)
}
