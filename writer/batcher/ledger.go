package batcher

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// BucketBatches is the key-value bucket where writers record their batches.
const BucketBatches = "logbook_writer_batches"

// ledgerTTL is how long a batch record is kept: far longer than any redelivery of its messages.
const ledgerTTL = 6 * time.Hour

// Batch states.
const (
	stateBefore = "before" // recorded, INSERT not known to have succeeded
	stateAfter  = "after"  // INSERT succeeded; the messages only need their acks
)

// batchRecord is a batch as the ledger keeps it: enough to rebuild it exactly from the valid
// stream (its sequences) and to insert it again under the same deduplication token.
type batchRecord struct {
	Token  string      `json:"token"`
	Runs   [][2]uint64 `json:"runs"` // sorted, disjoint inclusive ranges of stream sequences
	State  string      `json:"state"`
	Writer string      `json:"writer"`
}

func (r *batchRecord) first() uint64 { return r.Runs[0][0] }
func (r *batchRecord) last() uint64  { return r.Runs[len(r.Runs)-1][1] }

func (r *batchRecord) contains(seq uint64) bool {
	_, found := slices.BinarySearchFunc(r.Runs, seq, func(run [2]uint64, s uint64) int {
		switch {
		case run[1] < s:
			return -1
		case run[0] > s:
			return 1
		}
		return 0
	})
	return found
}

// runsOf compresses sorted sequences into ranges.
func runsOf(seqs []uint64) [][2]uint64 {
	var runs [][2]uint64
	for _, s := range seqs {
		if n := len(runs); n > 0 && runs[n-1][1]+1 == s {
			runs[n-1][1] = s
			continue
		}
		runs = append(runs, [2]uint64{s, s})
	}
	return runs
}

// ledger is every writer's shared record of batches (a JetStream key-value bucket, fsynced like
// everything else), mirrored in memory through a watch. A writer records a batch before its
// INSERT and again after it; a writer that receives a redelivered message looks it up here to
// learn whether it belongs to a batch that is already stored (ack it) or may be (insert that
// batch again, identically, under its token).
type ledger struct {
	kv   jetstream.KeyValue
	mu   sync.RWMutex
	recs map[string]*batchRecord
	// byLast holds recs sorted by last sequence, for covering; rebuilt when dirty.
	byLast []*batchRecord
	dirty  bool
	m      *natsx.Mirror
}

func openLedger(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*ledger, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketBatches,
		Description: "Logbook writer batch records",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		TTL:         ledgerTTL,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketBatches, err)
	}
	l := &ledger{kv: kv, recs: map[string]*batchRecord{}}
	l.m, err = natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.dirty = true
		if e.Operation() != jetstream.KeyValuePut {
			delete(l.recs, e.Key())
			return
		}
		var r batchRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil || len(r.Runs) == 0 {
			log.Error("skipping unreadable batch record", "key", e.Key(), "err", err)
			return
		}
		l.recs[e.Key()] = &r
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load batch records: %w", err)
	}
	return l, nil
}

func (l *ledger) close() { l.m.Stop() }

func recordKey(r *batchRecord) string { return fmt.Sprintf("b.%d", r.first()) }

// put records r durably and in memory.
func (l *ledger) put(ctx context.Context, r *batchRecord) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := l.kv.Put(ctx, recordKey(r), raw); err != nil {
		return fmt.Errorf("failed to record batch %s as %s: %w", r.Token, r.State, err)
	}
	l.mu.Lock()
	l.recs[recordKey(r)] = r
	l.dirty = true
	l.mu.Unlock()
	return nil
}

// covering returns the recorded batch that holds stream sequence seq, or nil. Batches are kept
// sorted by their last sequence, so a new message (past every recorded batch, the common case)
// costs one comparison and an older one scans only the batches that end after it.
func (l *ledger) covering(seq uint64) *batchRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirty {
		l.index()
	}
	i, _ := slices.BinarySearchFunc(l.byLast, seq, func(r *batchRecord, s uint64) int { return cmp.Compare(r.last(), s) })
	for _, r := range l.byLast[i:] {
		if r.first() <= seq && r.contains(seq) {
			return r
		}
	}
	return nil
}

// index rebuilds byLast; must be called with mu held.
func (l *ledger) index() {
	l.dirty = false
	l.byLast = l.byLast[:0]
	for _, r := range l.recs {
		l.byLast = append(l.byLast, r)
	}
	slices.SortFunc(l.byLast, func(a, b *batchRecord) int { return cmp.Compare(a.last(), b.last()) })
}
