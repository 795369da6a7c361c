package batcher

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

func decadesOfRecords(org string, n int) []*event.Record {
	recs := testRecords(org, 0, n)
	from := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	step := 26 * 365 * 24 * time.Hour / time.Duration(n)
	for i, r := range recs {
		r.Event.OccurredAt = from.Add(time.Duration(i) * step)
	}
	return recs
}

// The pieces are a function of the batch alone: the same records cut twice give the same pieces
// and tokens; no group spans more partitions than an INSERT may; every record is in one group.
func TestPiecesAreDeterministic(t *testing.T) {
	recs := decadesOfRecords("org_pieces", 1000)
	days := func(org string) uint16 { return 30 }
	a, b := groups(recs, days, store.MaxPartitionsPerInsert), groups(slices.Clone(recs), days, store.MaxPartitionsPerInsert)
	require.Equal(t, 4, len(a), "312 months at 100 partitions per INSERT")
	seen := map[string]bool{}
	for i := range a {
		assert.Equal(t, fmt.Sprintf("g%d", i), a[i].path)
		assert.Equal(t, idsOfRecs(a[i].recs), idsOfRecs(b[i].recs))
		distinct := map[store.Partition]bool{}
		for _, p := range a[i].parts {
			distinct[p] = true
		}
		assert.LessOrEqual(t, len(distinct), store.MaxPartitionsPerInsert)
		for _, r := range a[i].recs {
			assert.False(t, seen[r.ID])
			seen[r.ID] = true
		}
		assert.Equal(t, pieceToken("valid:1:1-1000:x", a[i].path, false, a[i].recs), pieceToken("valid:1:1-1000:x", b[i].path, false, b[i].recs))
	}
	assert.Len(t, seen, len(recs))
	live := groups(testRecords("org_pieces", 0, 500), days, store.MaxPartitionsPerInsert)
	require.Equal(t, 1, len(live), "a batch within the partition limit is one INSERT")
	assert.Equal(t, "valid:1:1-500:x", pieceToken("valid:1:1-500:x", live[0].path, false, live[0].recs), "... under the batch's own token")

	// Halves: at a partition boundary while there are several, then at the middle row.
	h := a[0].halves()
	assert.Equal(t, "g0.0", h[0].path)
	assert.Equal(t, len(a[0].recs), len(h[0].recs)+len(h[1].recs))
	assert.Less(t, h[0].parts[len(h[0].parts)-1].Compare(h[1].parts[0]), 0, "the halves hold different partitions")
	one := piece{path: "g0.1.1", recs: live[0].recs[:3], parts: live[0].parts[:3]}
	for one.parts[0] != one.parts[2] {
		one.recs, one.parts = one.recs[1:], one.parts[1:]
	}
	hh := one.halves()
	assert.Len(t, hh[0].recs, len(one.recs)/2)
	assert.Equal(t, hh, one.halves())
	assert.Regexp(t, `^[A-Za-z0-9:._-]{1,128}$`, pieceToken("valid:1796186522000000000:18446744073709551613-18446744073709551615:0123456789abcdef01234567", "g12.0.1.1.0.1.0.1.1.0.1", true, live[0].recs))
}

func idsOfRecs(recs []*event.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// partialStore makes ClickHouse refuse every INSERT of more than maxRows rows as too large, the
// way a memory limit does, after storing the first part of its rows (as an INSERT that had written
// some partitions' blocks before failing). The rows are really stored; only the refusal is made up.
type partialStore struct {
	*tracingStore
	maxRows int
	mu      sync.Mutex
	refused int
}

func (s *partialStore) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error {
	if len(recs) <= s.maxRows {
		return s.tracingStore.InsertWithRetention(ctx, token, recs, days)
	}
	if err := s.tracingStore.InsertWithRetention(ctx, token, recs[:len(recs)/3], days); err != nil {
		return err
	}
	s.mu.Lock()
	s.refused++
	s.mu.Unlock()
	return fmt.Errorf("failed to insert %d events (token %s): %w", len(recs), token,
		&chdb.Error{Message: "Code: 241. DB::Exception: Memory limit (for query) exceeded: would use 1.00 GiB. (MEMORY_LIMIT_EXCEEDED)"})
}

// Issue 9 item 4: a batch ClickHouse refuses for good (here: too large, after having stored a
// third of it) is split until every piece is stored, each event exactly once.
func TestRefusedBatchIsSplitAndStoredOnce(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	recs := testRecords(org, 500, 60)
	publishRecords(t, js, recs)
	st := &partialStore{tracingStore: newTracingStore(t), maxRows: 8}
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 200*time.Millisecond, 2*time.Second
	w, err := New(ctx, js, st, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	stop := runWriter(t, w)
	requireSettled(t, w)
	stop()
	requireRows(t, st.real, org, len(recs))
	assert.Empty(t, storetest.Duplicates(t, st.real, org))
	assert.Positive(t, st.refused)
	r, err := w.ledger.get(ctx, recordKey(w.streamEpoch, 1))
	require.NoError(t, err)
	if r != nil { // not pruned yet
		assert.Equal(t, stateAfter, r.State)
		assert.Contains(t, r.Split, "", "the whole batch was recorded as split")
	}
}

// Issue 9 item 4: a writer that dies in the middle of a split leaves its record saying which
// pieces were split; the writer that re-drives the batch inserts the same pieces (never the whole
// batch again, which would store the stored half twice under another token) and leaves out what
// is stored: every event once.
func TestRedriveAfterACrashMidSplitStoresEachEventOnce(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	// 48 events over 12 months, at most 4 partitions per INSERT (the real limit is 100; 4 keeps the
	// test quick: an INSERT into 100 partitions takes seconds here, each partition a part fsynced).
	recs := testRecords(org, 600, 48)
	for i, r := range recs {
		r.Event.OccurredAt = time.Date(2025, time.Month(1+i%12), 1+i/12, 0, 0, 0, 0, time.UTC)
	}
	publishRecords(t, js, recs)
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 100*time.Millisecond, time.Second
	log := slog.New(slog.DiscardHandler)
	trace := newTracingStore(t)

	dead, err := New(ctx, js, &sharedTrace{trace}, cfg, log)
	require.NoError(t, err)
	dead.maxParts = 4
	items := itemsOf(t, natstest.Fetch(t, dead.cons, len(recs)))
	r := dead.newRecord(items)
	require.NoError(t, dead.ledger.create(ctx, r))
	// It stored group g0 whole, then found g1 refused, split it, stored the first half of g1 and
	// died before the second.
	gs := groups(recsOf(items), func(string) uint16 { return 0 }, dead.maxParts)
	require.Greater(t, len(gs), 2)
	days := func(string) uint16 { return 0 }
	require.NoError(t, dead.insertPiece(ctx, r, gs[0], days))
	require.NoError(t, dead.split(ctx, r, gs[1].path))
	h := gs[1].halves()
	require.NoError(t, dead.insertPiece(ctx, r, h[0], days))
	dead.held.stop()

	next, err := New(ctx, js, &sharedTrace{trace}, cfg, log)
	require.NoError(t, err)
	next.maxParts = 4
	stop := runWriter(t, next)
	requireSettled(t, next)
	stop()
	requireRows(t, trace.real, org, len(recs))
	assert.Empty(t, trace.twice(), "events stored by two INSERTs")
	assert.Empty(t, storetest.Duplicates(t, trace.real, org))
}

func recsOf(items []item) []*event.Record {
	out := make([]*event.Record, len(items))
	for i, it := range items {
		out[i] = it.rec
	}
	return out
}
