package batcher

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
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
)

type countingStore struct {
	*store.Store
	inserts atomic.Int32
}

func (c *countingStore) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error {
	c.inserts.Add(1)
	return c.Store.InsertWithRetention(ctx, token, recs, days)
}

// recordOf is the record a writer would make of a batch of the stream sequences seqs.
func recordOf(w *Writer, seqs []uint64) *batchRecord {
	runs := runsOf(seqs)
	return &batchRecord{V: recordVersion, Epoch: w.streamEpoch, Token: w.batchToken(runs), Runs: runs,
		State: stateBefore, Writer: "dead", key: recordKey(w.streamEpoch, runs[0][0])}
}

// A writer that dies at any point of its batch protocol leaves the ledger in one of three states;
// the writer that receives the redelivered messages must then store every event exactly once.
func TestRedeliveredBatchIsSettledFromTheLedger(t *testing.T) {
	tests := []struct {
		name          string
		inserted      bool // the dead writer's INSERT landed
		recordedAfter bool // ... and it recorded the batch as stored
		wantInserts   bool // the new writer must INSERT (the re-drive)
	}{
		{"died after recording, before inserting", false, false, true},
		{"died after inserting, before recording it", true, false, true},
		{"died after recording it stored, before acking", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			_, js := natstest.New(t)
			st := &countingStore{Store: storetest.Shared(t)}
			org := storetest.NewOrg(t)
			const n = 40
			base := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
			for i := 0; i < n; i++ {
				r := &event.Record{ID: fmt.Sprintf("01LEDGER%018d", i), OrganizationID: org, ReceivedAt: base,
					Event: event.Event{Action: "a.b", OccurredAt: base.Add(time.Duration(i) * time.Minute),
						Actor: event.Entity{ID: "u", Type: "user"}, Targets: []event.Entity{}, Context: event.Context{Location: "x"}}}
				data, err := r.Marshal()
				require.NoError(t, err)
				m := nats.NewMsg(event.ValidSubject(org))
				m.Data = data
				m.Header.Set(jetstream.MsgIDHeader, r.MsgID())
				_, err = js.PublishMsg(ctx, m)
				require.NoError(t, err)
			}
			cfg := DefaultConfig()
			cfg.MaxWait, cfg.AckWait = 50*time.Millisecond, time.Second
			log := slog.New(slog.DiscardHandler)

			// The writer that dies: it takes the messages, runs part of the protocol, never acks.
			dead, err := New(ctx, js, st, cfg, log)
			require.NoError(t, err)
			batch, err := dead.cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
			require.NoError(t, err)
			var seqs []uint64
			var recs []*event.Record
			for m := range batch.Messages() {
				meta, err := m.Metadata()
				require.NoError(t, err)
				rec, err := event.Unmarshal(m.Data())
				require.NoError(t, err)
				seqs, recs = append(seqs, meta.Sequence.Stream), append(recs, rec)
			}
			require.Len(t, seqs, n)
			require.True(t, slices.IsSorted(seqs))
			r := recordOf(dead, seqs)
			require.NoError(t, dead.ledger.create(ctx, r))
			if tt.inserted {
				require.NoError(t, st.Store.Insert(ctx, r.Token, recs))
			}
			if tt.recordedAfter {
				after := *r
				after.State = stateAfter
				require.NoError(t, dead.ledger.put(ctx, &after))
			}
			dead.held.stop()

			// The writer that takes over once JetStream redelivers (after AckWait).
			next, err := New(ctx, js, st, cfg, log)
			require.NoError(t, err)
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- next.Run(rctx) }()
			defer func() { cancel(); <-done }()

			require.Eventually(t, func() bool {
				info, err := next.cons.Info(ctx)
				return err == nil && info.NumAckPending == 0 && info.NumPending == 0
			}, 20*time.Second, 50*time.Millisecond, "the redelivered batch was never settled")
			total, distinct, err := st.Count(ctx, org)
			require.NoError(t, err)
			assert.Equal(t, uint64(n), total, "every event stored exactly once")
			assert.Equal(t, uint64(n), distinct)
			assert.Equal(t, tt.wantInserts, st.inserts.Load() > 0)
			got, err := next.ledger.get(ctx, r.key)
			require.NoError(t, err)
			assert.Equal(t, stateAfter, got.State)
		})
	}
}

// A row ClickHouse refuses as data is moved to the rejected stream with the reason; the rest of
// its batch is stored once. The refusal is real: a failpoint, read when the process starts, makes
// the embedded engine's row encoding corrupt one row, so the child test process does the work.
func TestRefusedRowDoesNotBlockItsBatch(t *testing.T) {
	if os.Getenv("BATCHER_POISON_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRefusedRowDoesNotBlockItsBatch$", "-test.v")
		cmd.Env = append(os.Environ(), "BATCHER_POISON_CHILD=1", "LOGBOOK_FAILPOINTS=store-poison-action=value:test.poison")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "--- PASS: TestRefusedRowDoesNotBlockItsBatch")
		return
	}
	ctx := context.Background()
	_, js := natstest.New(t)
	st := &countingStore{Store: storetest.Shared(t)}
	org := storetest.NewOrg(t)
	base := time.Date(2026, 9, 2, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 10; i++ {
		action := "a.b"
		if i == 4 {
			action = "test.poison"
		}
		r := &event.Record{ID: fmt.Sprintf("01POISON%018d", i), OrganizationID: org, ReceivedAt: base,
			Event: event.Event{Action: action, OccurredAt: base.Add(time.Duration(i) * time.Second),
				Actor: event.Entity{ID: "u", Type: "user"}, Targets: []event.Entity{}, Context: event.Context{Location: "x"}}}
		data, err := r.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.ValidSubject(org))
		m.Data = data
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	cfg := DefaultConfig()
	cfg.MaxWait = 200 * time.Millisecond
	w, err := New(ctx, js, st, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool {
		info, err := w.cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	}, 20*time.Second, 50*time.Millisecond)
	total, distinct, err := st.Count(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, uint64(9), total)
	assert.Equal(t, uint64(9), distinct)
	rej, err := js.Stream(ctx, event.StreamRejected)
	require.NoError(t, err)
	msg, err := rej.GetLastMsgForSubject(ctx, event.RejectedSubject(org))
	require.NoError(t, err)
	assert.Contains(t, msg.Header.Get(event.HeaderRejectReason), "clickhouse refused the row")
	rec, err := event.Unmarshal(msg.Data)
	require.NoError(t, err)
	assert.Equal(t, "test.poison", rec.Event.Action)
}

// Issue 9 item 8: the ledger keeps a record until the writer consumer's ack floor passes its last
// sequence (no TTL: an outage of any length never removes a record whose messages may come back),
// and then removes it from the bucket and from every writer's memory; a record of an older stream
// goes at once.
func TestLedgerIsPrunedByTheAckFloor(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	org := storetest.NewOrg(t)
	cfg := DefaultConfig()
	cfg.MaxRows, cfg.MaxWait, cfg.AckWait, cfg.PruneEvery = 10, 50*time.Millisecond, 30*time.Second, 100*time.Millisecond
	log := slog.New(slog.DiscardHandler)

	kv, err := js.KeyValue(ctx, BucketBatches)
	if err == nil {
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		assert.Zero(t, st.TTL(), "the batch bucket has no TTL")
	}
	// A writer takes 5 messages and dies after recording them: they stay unacknowledged (AckWait is
	// long), so the ack floor stays below them.
	publishRecords(t, js, testRecords(org, 700, 5))
	dead, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	deadMsgs := natstest.Fetch(t, dead.cons, 5)
	var seqs []uint64
	for _, m := range deadMsgs {
		meta, err := m.Metadata()
		require.NoError(t, err)
		seqs = append(seqs, meta.Sequence.Stream)
	}
	held := recordOf(dead, seqs)
	require.NoError(t, dead.ledger.create(ctx, held))
	old := recordOf(dead, []uint64{1, 2, 3})
	old.Epoch--
	old.key = recordKey(old.Epoch, 1)
	require.NoError(t, dead.ledger.put(ctx, old))
	dead.held.stop()

	publishRecords(t, js, testRecords(org, 800, 50))
	w, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	kv, err = js.KeyValue(ctx, BucketBatches)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.TTL(), "the batch bucket has no TTL")
	stop := runWriter(t, w)
	requireRows(t, storetest.Shared(t), org, 50)
	keys := func() []string {
		ks, err := kv.ListKeys(ctx)
		require.NoError(t, err)
		var out []string
		for k := range ks.Keys() {
			out = append(out, k)
		}
		return out
	}
	// The 50 events' batches are acknowledged, but the ack floor stays below the dead writer's
	// batch: every record stays but the older stream's.
	require.Eventually(t, func() bool {
		ks := keys()
		return len(ks) > 1 && slices.Contains(ks, held.key) && !slices.Contains(ks, old.key) && w.ledger.count() == len(ks)
	}, 20*time.Second, 50*time.Millisecond, "records: %v", keys())
	stop()

	// Once its messages come back (here at once: the dead writer's deliveries are refused) and
	// are settled, every record goes.
	for _, m := range deadMsgs {
		require.NoError(t, m.Nak())
	}
	w2, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	runWriter(t, w2)
	requireRows(t, storetest.Shared(t), org, 55)
	require.Eventually(t, func() bool { return len(keys()) == 0 && w2.ledger.count() == 0 },
		20*time.Second, 50*time.Millisecond, "records left: %v", keys())

	// A record written by a writer that is gone, after this one last read the ledger, is pruned
	// too: pruning reads the ledger first.
	ghost, err := New(ctx, js, &sharedTrace{newTracingStore(t)}, cfg, log)
	require.NoError(t, err)
	late := recordOf(ghost, []uint64{2, 3})
	late.State = stateAfter
	require.NoError(t, ghost.ledger.put(ctx, late))
	ghost.held.stop()
	require.Eventually(t, func() bool { return len(keys()) == 0 }, 20*time.Second, 50*time.Millisecond, "records left: %v", keys())
}
