package batcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// tracingStore inserts into the real store and counts, per event id, how many INSERT statements
// that succeeded carried it: a second one is a duplicate whatever ClickHouse later merges.
type tracingStore struct {
	real   *store.Store
	before func(token string, recs []*event.Record) // runs before each INSERT, if set

	mu       sync.Mutex
	inserted map[string]int
	tokens   map[string]string // event id -> the token of the INSERT that stored it first
}

func newTracingStore(t *testing.T) *tracingStore {
	return &tracingStore{real: storetest.Shared(t), inserted: map[string]int{}, tokens: map[string]string{}}
}

func (s *tracingStore) StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error) {
	return s.real.StoredIDs(ctx, recs)
}

func (s *tracingStore) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error {
	if s.before != nil {
		s.before(token, recs)
	}
	if err := s.real.InsertWithRetention(ctx, token, recs, days); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if _, seen := s.tokens[r.ID]; seen && s.tokens[r.ID] == token {
			continue // the same INSERT again: ClickHouse's token dedup skips it
		}
		s.inserted[r.ID]++
		if s.tokens[r.ID] == "" {
			s.tokens[r.ID] = token
		}
	}
	return nil
}

// twice returns the ids stored by more than one distinct INSERT.
func (s *tracingStore) twice() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, n := range s.inserted {
		if n > 1 {
			out = append(out, id)
		}
	}
	return out
}

func testRecords(org string, from, n int) []*event.Record {
	base := time.Date(2026, 9, 3, 0, 0, 0, 0, time.UTC)
	out := make([]*event.Record, n)
	for i := range out {
		out[i] = &event.Record{ID: fmt.Sprintf("01WRITERS%017d", from+i), OrganizationID: org, ReceivedAt: base,
			Event: event.Event{Action: "a.b", OccurredAt: base.Add(time.Duration(from+i) * time.Second),
				Actor: event.Entity{ID: "u", Type: "user"}, Targets: []event.Entity{}, Context: event.Context{Location: "x"}}}
	}
	return out
}

func publishRecords(t *testing.T, js jetstream.JetStream, recs []*event.Record) {
	t.Helper()
	for _, r := range recs {
		data, err := r.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.ValidSubject(r.OrganizationID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, r.MsgID())
		_, err = js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
}

// runWriter runs w until the returned stop is called (or the test ends); stop returns once Run
// has finished the batch in hand.
func runWriter(t *testing.T, w *Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func requireSettled(t *testing.T, w *Writer) {
	t.Helper()
	require.Eventually(t, func() bool {
		info, err := w.cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 30*time.Second, 50*time.Millisecond, "the writer consumer never settled")
}

func requireRows(t *testing.T, st *store.Store, org string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		total, _, err := st.Count(context.Background(), org)
		return err == nil && total >= uint64(n)
	}, 30*time.Second, 50*time.Millisecond, "waiting for %d rows", n)
	total, distinct, err := st.Count(context.Background(), org)
	require.NoError(t, err)
	assert.Equal(t, uint64(n), total, "rows")
	assert.Equal(t, uint64(n), distinct, "distinct ids")
}

// Issue 9 item 8: a writer that re-drives a batch another writer left behind must keep the fresh
// messages it fetched with it in progress meanwhile. Before, it did not: a slow re-drive let
// JetStream hand the fresh messages to a second writer, and both stored them.
func TestFreshMessagesStayInProgressDuringARedrive(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 200*time.Millisecond, time.Second
	log := slog.New(slog.DiscardHandler)

	left := testRecords(org, 0, 30)
	publishRecords(t, js, left)
	// A writer takes the first messages, records them as a batch and dies before inserting.
	dead, err := New(ctx, js, newTracingStore(t), cfg, log)
	require.NoError(t, err)
	b, err := dead.cons.Fetch(len(left), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var seqs []uint64
	for m := range b.Messages() {
		meta, err := m.Metadata()
		require.NoError(t, err)
		seqs = append(seqs, meta.Sequence.Stream)
	}
	require.Len(t, seqs, len(left))
	require.NoError(t, dead.ledger.create(ctx, recordOf(dead, seqs)))
	dead.held.stop()

	fresh := testRecords(org, 100, 20)
	publishRecords(t, js, fresh)
	time.Sleep(1500 * time.Millisecond) // the dead writer's messages come back after AckWait

	// The next writer gets both; its re-drive of the left batch is slow (3 x AckWait).
	slow := newTracingStore(t)
	started := make(chan struct{}, 1)
	slow.before = func(string, []*event.Record) {
		select {
		case started <- struct{}{}:
			time.Sleep(3 * time.Second)
		default:
		}
	}
	a, err := New(ctx, js, slow, cfg, log)
	require.NoError(t, err)
	stopA := runWriter(t, a)
	<-started
	// A second writer is ready for anything JetStream redelivers meanwhile.
	// It cuts batches smaller, so what it stores differs from the first writer's batch (and token).
	ocfg := cfg
	ocfg.MaxRows = 7
	bw, err := New(ctx, js, &sharedTrace{slow}, ocfg, log)
	require.NoError(t, err)
	stopB := runWriter(t, bw)

	requireSettled(t, a)
	stopA() // returns once the batch in hand is done
	stopB()
	assert.Empty(t, slow.twice(), "events stored by two INSERTs")
	requireRows(t, slow.real, org, len(left)+len(fresh))
}

// sharedTrace lets two writers record their INSERTs in one tracingStore, without its before hook.
type sharedTrace struct{ s *tracingStore }

func (s *sharedTrace) StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error) {
	return s.s.StoredIDs(ctx, recs)
}

func (s *sharedTrace) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error {
	if err := s.s.real.InsertWithRetention(ctx, token, recs, days); err != nil {
		return err
	}
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	for _, r := range recs {
		if s.s.tokens[r.ID] == token {
			continue
		}
		s.s.inserted[r.ID]++
		if s.s.tokens[r.ID] == "" {
			s.s.tokens[r.ID] = token
		}
	}
	return nil
}

// Issue 9 item 8: the ledger is checked right before a batch is recorded and right before each
// INSERT. A writer that stalled past AckWait with messages in hand (a long pause) must not store
// them again once another writer has stored them: neither when it had not recorded them yet (it
// would record them as a batch of its own, under another token) nor when it had (the other writer
// re-drives its record; the stalled one must then see the record is stored and insert nothing).
func TestStalledWriterDoesNotStoreWhatAnotherStored(t *testing.T) {
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded=%v", recorded), func(t *testing.T) {
			ctx := context.Background()
			_, js := natstest.New(t)
			org := storetest.NewOrg(t)
			cfg := DefaultConfig()
			cfg.MaxWait, cfg.AckWait = 100*time.Millisecond, time.Second
			log := slog.New(slog.DiscardHandler)
			trace := newTracingStore(t)

			recs := testRecords(org, 200, 25)
			publishRecords(t, js, recs)
			stalled, err := New(ctx, js, &sharedTrace{trace}, cfg, log)
			require.NoError(t, err)
			defer stalled.held.stop()
			items := itemsOf(t, natstest.Fetch(t, stalled.cons, len(recs)))
			var r *batchRecord
			if recorded {
				r = stalled.newRecord(items)
				require.NoError(t, stalled.ledger.create(ctx, r))
			}

			// While it is stalled, JetStream redelivers to another writer, which stores them (in
			// smaller batches, so under other tokens, unless it finds them recorded).
			ocfg := cfg
			ocfg.MaxRows = 10
			other, err := New(ctx, js, &sharedTrace{trace}, ocfg, log)
			require.NoError(t, err)
			stop := runWriter(t, other)
			requireSettled(t, other)
			requireRows(t, trace.real, org, len(recs))
			stop()

			// The stalled writer wakes up and goes on where it stopped.
			if recorded {
				stalled.storeFresh(ctx, ctx, r, items)
			} else {
				stalled.flush(ctx, ctx, msgsOf(items))
			}
			assert.Empty(t, trace.twice(), "events stored by two INSERTs")
			assert.Empty(t, storetest.Duplicates(t, trace.real, org))
			assert.Zero(t, stalled.held.held(), "the stalled writer settled what it held")
		})
	}
}

// A writer that stalled past AckWait with messages in hand, not yet recorded, must not store them
// once another writer has stored them, acknowledged them and pruned their batch's record (prune
// purges it from the bucket, so the stalled writer's catch-up finds no trace of it): those
// messages are at or below the consumer's ack floor. Before, the stalled writer recorded them as a
// batch of its own and stored them again (the chaos test's "duplicated" under two writers).
func TestStalledWriterDoesNotStoreWhatAnotherStoredAndPruned(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 100*time.Millisecond, time.Second
	log := slog.New(slog.DiscardHandler)
	trace := newTracingStore(t)

	recs := testRecords(org, 500, 25)
	publishRecords(t, js, recs)
	stalled, err := New(ctx, js, &sharedTrace{trace}, cfg, log)
	require.NoError(t, err)
	defer stalled.held.stop()
	msgs := natstest.Fetch(t, stalled.cons, len(recs))

	// While it is stalled, JetStream redelivers to another writer, which stores them in smaller
	// batches (under other tokens), acknowledges them and prunes their records.
	ocfg := cfg
	ocfg.MaxRows = 10
	other, err := New(ctx, js, &sharedTrace{trace}, ocfg, log)
	require.NoError(t, err)
	stop := runWriter(t, other)
	requireSettled(t, other)
	requireRows(t, trace.real, org, len(recs))
	stop()
	other.prune(ctx)
	require.Zero(t, other.ledger.count(), "the other writer pruned its records")

	// The stalled writer wakes up and goes on where it stopped.
	stalled.flush(ctx, ctx, msgs)
	assert.Empty(t, trace.twice(), "events stored by two INSERTs")
	assert.Empty(t, storetest.Duplicates(t, trace.real, org))
	assert.Zero(t, stalled.held.held(), "the stalled writer settled what it held")
}

// A message JetStream delivers again while the writer is still gathering its batch (the process
// was paused past AckWait between two fetches of one collect) comes twice in the batch's messages:
// it must be stored once. Before, both copies went into the batch and its INSERT stored the event
// as two rows (the chaos test's "duplicated 2" under two writers: one id, two rows, one message on
// the valid stream, one batch record, no warning).
func TestMessageDeliveredTwiceInOneBatchIsStoredOnce(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 100*time.Millisecond, time.Second
	log := slog.New(slog.DiscardHandler)
	trace := newTracingStore(t)

	recs := testRecords(org, 600, 5)
	publishRecords(t, js, recs)
	w, err := New(ctx, js, &sharedTrace{trace}, cfg, log)
	require.NoError(t, err)
	defer w.held.stop()
	first := natstest.Fetch(t, w.cons, len(recs))
	time.Sleep(cfg.AckWait + 300*time.Millisecond) // paused: JetStream delivers them again
	again := natstest.Fetch(t, w.cons, len(recs))

	w.flush(ctx, ctx, append(first, again...))
	assert.Empty(t, trace.twice(), "events stored twice")
	assert.Empty(t, storetest.Duplicates(t, trace.real, org))
	requireRows(t, trace.real, org, len(recs))
	requireSettled(t, w)
}

// Issue 9 item 8: ledger records are keyed by the stream's identity. A recreated valid stream
// reuses sequences from 1; a record of the old stream must not settle the new stream's messages.
// Before, the new messages were acked as "already stored" and lost.
func TestRecreatedStreamDoesNotReuseLedgerRecords(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	cfg := DefaultConfig()
	cfg.MaxWait, cfg.AckWait = 100*time.Millisecond, 2*time.Second
	log := slog.New(slog.DiscardHandler)

	first := testRecords(org, 300, 10)
	publishRecords(t, js, first)
	w1, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w1.Run(wctx) }()
	requireSettled(t, w1)
	requireRows(t, st, org, len(first))
	cancel()
	<-done

	// The operator deletes and recreates the valid stream (a later second, as any real recreation).
	require.NoError(t, js.DeleteStream(ctx, event.StreamValid))
	time.Sleep(1100 * time.Millisecond)
	require.NoError(t, natsx.EnsureStreams(ctx, js, natsx.DefaultStreamLimits()))
	second := testRecords(org, 400, 10)
	publishRecords(t, js, second)
	w2, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	runWriter(t, w2)
	requireSettled(t, w2)
	requireRows(t, st, org, len(first)+len(second))
}

var _ = errors.New

// itemsOf decodes fetched messages into the items a writer's batch holds.
func itemsOf(t *testing.T, msgs []jetstream.Msg) []item {
	t.Helper()
	var items []item
	for _, m := range msgs {
		meta, err := m.Metadata()
		require.NoError(t, err)
		rec, err := event.Unmarshal(m.Data())
		require.NoError(t, err)
		items = append(items, item{meta.Sequence.Stream, m, rec})
	}
	return items
}
