package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// Reads run with their limits on the real engine; a read past one stops with a *LimitError naming
// it. Tiny limits make it deterministic.
func TestReadsStopAtTheirLimits(t *testing.T) {
	st := storetest.Shared(t)
	ctx := context.Background()
	org := storetest.NewOrg(t)
	recs := make([]*event.Record, 50)
	base := time.Now().Add(-time.Hour)
	for i := range recs {
		recs[i] = record(org, i, base.Add(time.Duration(i)*time.Second))
	}
	require.NoError(t, st.Insert(ctx, "limits-"+org, recs))

	all := store.Filter{Org: org}
	got, err := st.Search(ctx, all, true, nil, 100)
	require.NoError(t, err, "the default limits let an ordinary search through")
	require.Len(t, got, 50)

	rows := st.WithLimits(store.ReadLimits{Search: store.QueryLimits{MaxRowsToRead: 1}, Export: store.QueryLimits{MaxRowsToRead: 1}})
	_, err = rows.Search(ctx, all, true, nil, 100)
	requireLimit(t, err, store.LimitRows)
	_, err = rows.GetWithin(ctx, org, recs[0].ID, 0)
	requireLimit(t, err, store.LimitRows)
	err = rows.Each(ctx, all, false, func(*store.Event) error { return nil })
	requireLimit(t, err, store.LimitRows)

	mem := st.WithLimits(store.ReadLimits{Search: store.QueryLimits{MaxMemoryUsage: 1}})
	_, err = mem.Search(ctx, store.Filter{Org: org, Text: "user"}, true, nil, 100)
	requireLimit(t, err, store.LimitMemory)

	// The export limits are the export's own: the search limits do not apply to it, and back.
	n := 0
	require.NoError(t, rows.WithLimits(store.ReadLimits{Search: store.QueryLimits{MaxRowsToRead: 1}}).
		Each(ctx, all, false, func(*store.Event) error { n++; return nil }))
	assert.Equal(t, 50, n)

	// An error of the callback is the callback's, not a limit.
	stop := errors.New("stop")
	err = st.Each(ctx, all, false, func(*store.Event) error { return stop })
	assert.ErrorIs(t, err, stop)
}

// The time limit: a statement past max_execution_time stops with a LimitError of kind time.
func TestTimeLimitStopsAStatement(t *testing.T) {
	db := storetest.SharedEngine(t)
	l := store.QueryLimits{MaxExecutionTime: 300 * time.Millisecond}
	settings := strings.TrimPrefix(l.Clause(), "\nSETTINGS ")
	began := time.Now()
	// 1,000 rows of 10 ms each, one row per block: 10 s unless the limit stops it.
	_, err := db.Query(context.Background(), "SELECT sleepEachRow(0.01) FROM numbers(1000) SETTINGS max_block_size = 1, "+settings, nil)
	requireLimit(t, store.AsLimitError(err, l), store.LimitTime)
	assert.Less(t, time.Since(began), 5*time.Second)
}

func requireLimit(t *testing.T, err error, kind string) {
	t.Helper()
	var le *store.LimitError
	require.True(t, errors.As(err, &le), "want a LimitError, got %v", err)
	assert.Equal(t, kind, le.Kind, "%v", err)
}

// An export's memory does not grow with the number of parts it reads (issue 13: the 4M-row export
// at 10M events stopped at its 2 GiB limit). A read in sorting-key order keeps a reader per part
// open at once; here 40 parts (merges are stopped), one per day, are exported under a memory limit
// that one statement over all of them goes past, but a read of a day's parts stays far below. The
// export comes out whole and in order, both ways.
func TestExportMemoryDoesNotGrowWithParts(t *testing.T) {
	st := storetest.Shared(t)
	ctx := context.Background()
	org := storetest.NewOrg(t)
	base := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -60)
	const parts, perPart = 40, 500
	var want, within []string
	from, to := base.AddDate(0, 0, 5).Add(30*time.Minute), base.AddDate(0, 0, 33).Add(time.Hour)
	for p := range parts {
		recs := make([]*event.Record, perPart)
		for i := range recs {
			k := p*perPart + i
			recs[i] = record(org, k, base.AddDate(0, 0, p).Add(time.Duration(i)*2*time.Minute))
			recs[i].Event.Metadata = map[string]any{"note": strings.Repeat("x", 300)}
			want = append(want, recs[i].ID)
			if at := recs[i].Event.OccurredAt; !at.Before(from) && at.Before(to) {
				within = append(within, recs[i].ID)
			}
		}
		require.NoError(t, st.Insert(ctx, fmt.Sprintf("parts-%s-%d", org, p), recs))
	}

	low := st.WithLimits(store.ReadLimits{Export: store.QueryLimits{MaxMemoryUsage: 5 << 20}})
	for _, desc := range []bool{false, true} {
		var got []string
		err := low.Each(ctx, store.Filter{Org: org}, desc, func(e *store.Event) error {
			got = append(got, e.ID)
			return nil
		})
		require.NoError(t, err, "desc %v", desc)
		exp := slices.Clone(want)
		if desc {
			slices.Reverse(exp)
		}
		require.Equal(t, exp, got, "desc %v", desc)
	}

	// A range that begins and ends inside parts.
	var got []string
	require.NoError(t, low.Each(ctx, store.Filter{Org: org, Start: from, End: to}, false, func(e *store.Event) error {
		got = append(got, e.ID)
		return nil
	}))
	require.Equal(t, within, got)
}
