package batcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/writer/batcher"
)

const (
	waitFor = 20 * time.Second
	tick    = 25 * time.Millisecond
)

func quietLog() *slog.Logger {
	if os.Getenv("LOGBOOK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig() batcher.Config {
	return batcher.Config{MaxRows: 100, MaxBytes: 16 << 20, MaxWait: 50 * time.Millisecond, InsertTimeout: 10 * time.Second,
		AckWait: 5 * time.Second, PruneEvery: time.Second}
}

var idSeq atomic.Int64

func newRecords(org string, n int) []*event.Record {
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	out := make([]*event.Record, n)
	for i := range out {
		out[i] = &event.Record{
			ID:             fmt.Sprintf("01TEST%020d", idSeq.Add(1)),
			OrganizationID: org,
			ReceivedAt:     base.Add(time.Duration(i)*time.Millisecond + time.Second),
			Event: event.Event{
				Action:     "user.signed_in",
				OccurredAt: base.Add(time.Duration(i) * time.Millisecond),
				Version:    1,
				Actor:      event.Entity{ID: "user_1", Type: "user", Name: "Jon"},
				Targets:    []event.Entity{{ID: "team_1", Type: "team"}},
				Context:    event.Context{Location: "203.0.113.7"},
				Metadata:   map[string]any{"i": json.Number(fmt.Sprint(i))},
			},
		}
	}
	return out
}

// publishValid publishes recs to the valid stream as the validator does (event id as message id).
func publishValid(t testing.TB, js jetstream.JetStream, recs []*event.Record) {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, len(recs))
	for _, r := range recs {
		data, err := r.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.ValidSubject(r.OrganizationID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, r.MsgID())
		f, err := js.PublishMsgAsync(m)
		require.NoError(t, err)
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish failed: %v", err)
		case <-time.After(waitFor):
			t.Fatal("publish not acknowledged")
		}
	}
}

func publishRaw(t testing.TB, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	_, err := js.Publish(context.Background(), subject, data)
	require.NoError(t, err)
}

// insertCall is one Insert the writer made.
type insertCall struct {
	token string
	ids   []string
	err   error
}

// recordingStore forwards to the ch store, recording every call. fail, when set, decides the
// outcome of call n (1-based) before (failBefore) or after (failAfter) the ch INSERT ran.
type recordingStore struct {
	real       *store.Store
	failBefore func(n int) bool
	failAfter  func(n int) bool
	delay      func(n int) time.Duration
	started    chan struct{} // receives once per call, if set (non-blocking)

	mu       sync.Mutex
	calls    []insertCall
	finished atomic.Int32 // calls that have returned
}

func (s *recordingStore) StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error) {
	return s.real.StoredIDs(ctx, recs)
}

func (s *recordingStore) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error {
	s.mu.Lock()
	n := len(s.calls) + 1
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	s.calls = append(s.calls, insertCall{token: token, ids: ids})
	s.mu.Unlock()
	if s.started != nil {
		select {
		case s.started <- struct{}{}:
		default:
		}
	}
	if s.delay != nil {
		time.Sleep(s.delay(n))
	}
	var err error
	switch {
	case s.failBefore != nil && s.failBefore(n):
		err = errors.New("clickhouse unavailable (injected)")
	default:
		err = s.real.InsertWithRetention(ctx, token, recs, days)
		if err == nil && s.failAfter != nil && s.failAfter(n) {
			err = errors.New("connection lost after the insert was sent (injected)")
		}
	}
	s.mu.Lock()
	s.calls[n-1].err = err
	s.mu.Unlock()
	s.finished.Add(1)
	return err
}

func (s *recordingStore) snapshot() []insertCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]insertCall(nil), s.calls...)
}

// startWriter runs a writer until the test ends, checking that Run returns once cancelled.
func startWriter(t *testing.T, js jetstream.JetStream, st batcher.Store, cfg batcher.Config) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := batcher.New(ctx, js, st, cfg, quietLog())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(waitFor):
				t.Error("writer.Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func count(t testing.TB, s *store.Store, org string) (uint64, uint64) {
	t.Helper()
	total, distinct, err := s.Count(context.Background(), org)
	require.NoError(t, err)
	return total, distinct
}

// requireStored waits until org has n rows, then checks they are n distinct events.
func requireStored(t *testing.T, s *store.Store, org string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		total, _ := count(t, s, org)
		return total >= uint64(n)
	}, waitFor, tick, "waiting for %d rows", n)
	total, distinct := count(t, s, org)
	assert.Equal(t, uint64(n), total, "rows stored")
	assert.Equal(t, uint64(n), distinct, "distinct event ids stored")
}

func storedIDs(t testing.TB, s *store.Store, org string) []string {
	t.Helper()
	var ids []string
	var from *store.Position
	for {
		page, err := s.Page(context.Background(), org, false, from, store.MaxPage)
		require.NoError(t, err)
		for _, e := range page {
			ids = append(ids, e.ID)
		}
		if len(page) < store.MaxPage {
			break
		}
		last := page[len(page)-1]
		from = &store.Position{OccurredAt: last.OccurredAt, ID: last.ID}
	}
	sort.Strings(ids)
	return ids
}

func idsOf(recs []*event.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	sort.Strings(ids)
	return ids
}

func consumerInfo(t testing.TB, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), event.StreamValid, event.ConsumerWriter)
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info
}

// requireAcked waits until the writer consumer has nothing pending and nothing unacknowledged.
func requireAcked(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	require.Eventually(t, func() bool {
		info := consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, tick, "writer consumer must end with nothing pending or unacknowledged")
}

func streamCount(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func TestEventsAreStoredOnce(t *testing.T) {
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	startWriter(t, js, st, testConfig())

	recs := newRecords(org, 10)
	publishValid(t, js, recs)
	requireStored(t, st, org, len(recs))
	requireAcked(t, js)
	assert.Equal(t, idsOf(recs), storedIDs(t, st, org))

	// What is stored is the event as published.
	page, err := st.Page(context.Background(), org, false, nil, 1)
	require.NoError(t, err)
	require.Len(t, page, 1)
	assert.Equal(t, recs[0].ID, page[0].ID)
	assert.Equal(t, recs[0].Event.OccurredAt, page[0].OccurredAt)
	assert.Equal(t, recs[0].ReceivedAt, page[0].ReceivedAt)
	want, err := json.Marshal(recs[0].Event)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(page[0].JSON()))

	// More events later are stored too, and nothing is stored twice.
	more := newRecords(org, 5)
	publishValid(t, js, more)
	requireStored(t, st, org, len(recs)+len(more))
	requireAcked(t, js)
}

func TestBatchesAreCutBySize(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t)}
	org := storetest.NewOrg(t)
	recs := newRecords(org, 250)
	publishValid(t, js, recs) // all waiting before the writer starts

	cfg := testConfig()
	cfg.MaxRows = 100
	cfg.MaxWait = 500 * time.Millisecond // long enough that a batch is cut by size, not time
	cfg.AckWait = 5 * time.Second
	startWriter(t, js, st, cfg)

	requireStored(t, st.real, org, len(recs))
	requireAcked(t, js)
	calls := st.snapshot()
	require.GreaterOrEqual(t, len(calls), 3, "250 events at 100 per batch need at least 3 INSERTs")
	full, sum := 0, 0
	for _, c := range calls {
		require.NoError(t, c.err)
		assert.LessOrEqual(t, len(c.ids), cfg.MaxRows)
		if len(c.ids) == cfg.MaxRows {
			full++
		}
		sum += len(c.ids)
	}
	assert.Equal(t, len(recs), sum, "every event inserted once")
	assert.GreaterOrEqual(t, full, 2, "waiting events fill whole batches")
	assert.Equal(t, idsOf(recs), storedIDs(t, st.real, org))
}

func TestBatchIsFlushedAfterMaxWait(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t)}
	org := storetest.NewOrg(t)
	cfg := testConfig()
	cfg.MaxRows = 10_000
	startWriter(t, js, st, cfg)

	recs := newRecords(org, 3)
	publishValid(t, js, recs)
	requireStored(t, st.real, org, len(recs))
	requireAcked(t, js)
	for _, c := range st.snapshot() {
		assert.Less(t, len(c.ids), cfg.MaxRows, "a partial batch is flushed by time")
	}
}

func TestFailedInsertIsRetriedWithoutLoss(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t), failBefore: func(n int) bool { return n <= 2 }}
	org := storetest.NewOrg(t)
	recs := newRecords(org, 40)
	publishValid(t, js, recs)
	startWriter(t, js, st, testConfig())

	requireStored(t, st.real, org, len(recs))
	requireAcked(t, js)
	assert.Equal(t, idsOf(recs), storedIDs(t, st.real, org))

	calls := st.snapshot()
	require.GreaterOrEqual(t, len(calls), 3)
	assert.Error(t, calls[0].err)
	assert.Error(t, calls[1].err)
	assert.NoError(t, calls[2].err)
	assert.Equal(t, calls[0].token, calls[1].token, "a retry is the same batch under the same token")
	assert.Equal(t, calls[0].token, calls[2].token)
	assert.Equal(t, calls[0].ids, calls[2].ids)
}

// An INSERT that reached ClickHouse but whose answer was lost is retried under the same token, and
// ClickHouse's insert dedup keeps the rows once.
func TestInsertRetriedAfterUnknownOutcomeIsDeduplicated(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t), failAfter: func(n int) bool { return n == 1 }}
	org := storetest.NewOrg(t)
	recs := newRecords(org, 30)
	publishValid(t, js, recs)
	startWriter(t, js, st, testConfig())

	require.Eventually(t, func() bool {
		calls := st.snapshot()
		return len(calls) >= 2 && calls[1].err == nil
	}, waitFor, tick)
	requireAcked(t, js)
	requireStored(t, st.real, org, len(recs))
	calls := st.snapshot()
	assert.Equal(t, calls[0].token, calls[1].token)
}

func TestUndecodableMessageIsDeadLettered(t *testing.T) {
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	startWriter(t, js, st, testConfig())

	before := newRecords(org, 3)
	publishValid(t, js, before)
	garbage := []byte("{not a record")
	publishRaw(t, js, event.ValidSubject(org), garbage)
	after := newRecords(org, 3)
	publishValid(t, js, after)

	requireStored(t, st, org, len(before)+len(after))
	requireAcked(t, js)
	require.Eventually(t, func() bool { return streamCount(t, js, event.StreamRejected) == 1 }, waitFor, tick)
	s, err := js.Stream(context.Background(), event.StreamRejected)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(context.Background(), event.RejectedSubject("_invalid"))
	require.NoError(t, err)
	assert.Equal(t, garbage, m.Data)
	assert.Contains(t, m.Header.Get(event.HeaderRejectReason), "writer could not decode")
}

func TestCancelReturnsFromRun(t *testing.T) {
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	cfg := testConfig()
	cfg.MaxWait = 200 * time.Millisecond
	stop := startWriter(t, js, st, cfg)
	start := time.Now()
	stop() // fails the test if Run does not return
	assert.Less(t, time.Since(start), 5*time.Second)
}

// A writer stopped while its INSERT keeps failing returns promptly without acking; the batch is
// redelivered to the next writer, which stores it exactly once.
func TestShutdownDuringRetriesLeavesBatchForRedelivery(t *testing.T) {
	_, js := natstest.New(t)
	ch := storetest.Shared(t)
	org := storetest.NewOrg(t)
	recs := newRecords(org, 20)
	publishValid(t, js, recs)

	cfg := testConfig()
	cfg.AckWait = time.Second
	broken := &recordingStore{real: ch, failBefore: func(int) bool { return true }}
	stop := startWriter(t, js, broken, cfg)
	require.Eventually(t, func() bool { return len(broken.snapshot()) >= 2 }, waitFor, tick, "the writer retries")
	start := time.Now()
	stop()
	assert.Less(t, time.Since(start), 5*time.Second, "Run returns promptly while retrying")
	total, _ := count(t, ch, org)
	assert.Zero(t, total)
	assert.Positive(t, consumerInfo(t, js).NumAckPending, "nothing was acknowledged")

	healthy := &recordingStore{real: ch}
	startWriter(t, js, healthy, cfg)
	requireStored(t, ch, org, len(recs))
	requireAcked(t, js)
	assert.Equal(t, idsOf(recs), storedIDs(t, ch, org))
}

func TestTwoWritersStoreEachEventOnce(t *testing.T) {
	_, js := natstest.New(t)
	ch := storetest.Shared(t)
	org := storetest.NewOrg(t)
	cfg := testConfig()
	cfg.MaxRows = 20
	a := &recordingStore{real: ch}
	b := &recordingStore{real: ch}
	startWriter(t, js, a, cfg)
	startWriter(t, js, b, cfg)

	recs := newRecords(org, 300)
	publishValid(t, js, recs)
	requireStored(t, ch, org, len(recs))
	requireAcked(t, js)
	assert.Equal(t, idsOf(recs), storedIDs(t, ch, org))
	// Each event went to exactly one INSERT of one writer.
	inserted := map[string]int{}
	for _, c := range append(a.snapshot(), b.snapshot()...) {
		require.NoError(t, c.err)
		assert.LessOrEqual(t, len(c.ids), cfg.MaxRows)
		for _, id := range c.ids {
			inserted[id]++
		}
	}
	assert.Len(t, inserted, len(recs))
	for id, n := range inserted {
		assert.Equal(t, 1, n, id)
	}
}

// An INSERT slower than AckWait must not let JetStream hand the batch to another writer: that
// writer could store it a second time under another batch's token (a different grouping of the
// redelivered messages), which insert dedup cannot catch.
func TestSlowInsertIsNotRedeliveredToAnotherWriter(t *testing.T) {
	_, js := natstest.New(t)
	ch := storetest.Shared(t)
	org := storetest.NewOrg(t)
	cfg := testConfig()
	cfg.AckWait = time.Second

	first := newRecords(org, 20)
	publishValid(t, js, first)
	slow := &recordingStore{real: ch, started: make(chan struct{}, 1), delay: func(n int) time.Duration {
		if n == 1 {
			return 2500 * time.Millisecond // 2.5 x AckWait, well below InsertTimeout
		}
		return 0
	}}
	startWriter(t, js, slow, cfg)
	select {
	case <-slow.started:
	case <-time.After(waitFor):
		t.Fatal("the first writer never inserted")
	}
	// While the first INSERT hangs, a second writer joins and more events arrive.
	other := &recordingStore{real: ch}
	ocfg := cfg
	ocfg.MaxRows = 10
	startWriter(t, js, other, ocfg)
	second := newRecords(org, 10)
	publishValid(t, js, second)

	// The slow INSERT ends and is acknowledged.
	require.Eventually(t, func() bool { return slow.finished.Load() >= 1 }, waitFor, tick)
	requireStored(t, ch, org, len(first)+len(second))
	requireAcked(t, js)

	firstIDs := map[string]bool{}
	for _, r := range first {
		firstIDs[r.ID] = true
	}
	for _, c := range other.snapshot() {
		for _, id := range c.ids {
			assert.False(t, firstIDs[id], "event %s was handed to the second writer while the first was still inserting it", id)
		}
	}
	total, distinct := count(t, ch, org)
	assert.Equal(t, uint64(len(first)+len(second)), total, "no event stored twice")
	assert.Equal(t, total, distinct)
}

func TestConfigValidate(t *testing.T) {
	good := batcher.DefaultConfig()
	require.NoError(t, good.Validate())
	tests := []struct {
		name   string
		mutate func(*batcher.Config)
	}{
		{"zero rows", func(c *batcher.Config) { c.MaxRows = 0 }},
		{"too many rows", func(c *batcher.Config) { c.MaxRows = 1_000_001 }},
		{"zero wait", func(c *batcher.Config) { c.MaxWait = 0 }},
		{"ack wait below twice the batch wait", func(c *batcher.Config) { c.AckWait = c.MaxWait }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			assert.Error(t, c.Validate())
			_, js := natstest.New(t)
			_, err := batcher.New(context.Background(), js, storetest.Shared(t), c, quietLog())
			assert.Error(t, err, "New refuses a config that cannot work")
		})
	}
}

// historyRecords returns n events of org whose occurred_at spread evenly over from..to (a history
// import), received now.
func historyRecords(org string, n int, from, to time.Time) []*event.Record {
	recs := newRecords(org, n)
	step := to.Sub(from) / time.Duration(n)
	for i, r := range recs {
		r.Event.OccurredAt = from.Add(time.Duration(i) * step).UTC().Truncate(time.Millisecond)
	}
	return recs
}

// Issue 9 item 4, as a new user met it: a bulk import of 1,000 events whose occurred_at spans
// 2000–2026 (over 300 monthly partitions) must be stored completely, and must not hold up another
// organization's live events. Before, ClickHouse refused the batch ("Code: 252 Too many partitions
// for single INSERT block (more than 100)") and the writer retried the same INSERT forever.
func TestHistoryImportSpanningDecadesIsStored(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t)}
	org, live := storetest.NewOrg(t), storetest.NewOrg(t)
	history := historyRecords(org, 1000, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	publishValid(t, js, history)
	publishValid(t, js, newRecords(live, 5))
	cfg := testConfig()
	cfg.MaxRows = 10_000 // the default: the whole import arrives as one batch
	cfg.MaxWait = 200 * time.Millisecond
	startWriter(t, js, st, cfg)

	// Slow here: each of the 312 partitions is a part written and fsynced on its own.
	require.Eventually(t, func() bool {
		total, _ := count(t, st.real, org)
		return total >= uint64(len(history))
	}, 3*time.Minute, 100*time.Millisecond, "waiting for the import")
	requireStored(t, st.real, live, 5)
	requireStored(t, st.real, org, len(history))
	requireAcked(t, js)
	assert.Equal(t, idsOf(history), storedIDs(t, st.real, org))
	for _, c := range st.snapshot() {
		assert.NoError(t, c.err, "no INSERT should be refused: the writer groups rows so none exceeds the partition limit")
	}
}

// Issue 9 item 4: batches are bounded by bytes as well as rows, so large events make smaller
// batches (and an INSERT's memory stays bounded): 60 events of about 20 KiB each with a 128 KiB
// bound are stored in INSERTs of at most 6 events, each once.
func TestBatchesAreCutByBytes(t *testing.T) {
	_, js := natstest.New(t)
	st := &recordingStore{real: storetest.Shared(t)}
	org := storetest.NewOrg(t)
	recs := newRecords(org, 60)
	for _, r := range recs {
		r.Event.Metadata["blob"] = strings.Repeat("x", 20<<10)
	}
	publishValid(t, js, recs) // all waiting before the writer starts
	cfg := testConfig()
	cfg.MaxRows = 1000
	cfg.MaxBytes = 128 << 10
	cfg.MaxWait = 500 * time.Millisecond
	startWriter(t, js, st, cfg)

	requireStored(t, st.real, org, len(recs))
	requireAcked(t, js)
	sum := 0
	for _, c := range st.snapshot() {
		require.NoError(t, c.err)
		assert.LessOrEqual(t, len(c.ids), 6, "at most 128 KiB of 20 KiB events per batch")
		sum += len(c.ids)
	}
	assert.Equal(t, len(recs), sum, "every event inserted once")
	assert.Empty(t, storetest.Duplicates(t, st.real, org))
}

// On a three-node cluster the ledger's bucket has three replicas, and a node answers a key-value
// read from its own replica, which can lag the leader by the record just written. A batch whose
// record is not yet visible there must not be taken for one another writer finished and pruned:
// every event is stored, once.
func TestThreeNodeClusterStoresEveryEvent(t *testing.T) {
	cluster := natstest.NewCluster(t)
	js := cluster.JS[0]
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	for _, node := range cluster.JS { // a writer on each node: two of them read followers' replicas
		startWriter(t, node, st, testConfig())
	}

	// The third node is stopped for a while and started again: it catches up, and answers reads
	// from its replica before it has every record.
	var recs []*event.Record
	for i := range 30 {
		switch i {
		case 5:
			cluster.Stop(2)
		case 15:
			cluster.Start(t, 2)
		}
		more := newRecords(org, 100)
		publishValid(t, js, more)
		recs = append(recs, more...)
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		info := consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0
	}, 2*time.Minute, tick, "waiting for the writers to settle every message")
	requireStored(t, st, org, len(recs))
}
