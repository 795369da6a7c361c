package batcher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// BucketBatches is the key-value bucket where writers record their batches.
const BucketBatches = "logbook_writer_batches"

// Batch states.
const (
	stateBefore = "before" // recorded, INSERT not known to have succeeded
	stateAfter  = "after"  // INSERT succeeded; the messages only need their acks
)

// recordVersion marks records that carry their stream epoch and retention stamps; records written
// before (version 0) hold neither and are read as described on batchRecord.
const recordVersion = 2

// batchRecord is a batch as the ledger keeps it: enough to rebuild it exactly from the valid
// stream (its epoch and sequences), to cut it into the same INSERTs (the retention each row was
// stamped with, and which pieces were split) and to insert each again under the same
// deduplication token.
type batchRecord struct {
	V int `json:"v,omitempty"`
	// Epoch is the valid stream's creation time (Unix nanoseconds): a recreated stream reuses
	// sequences from 1, and its batches must never be taken for the old stream's. Version 0
	// records carry the epoch only in their token, in seconds.
	Epoch  int64       `json:"epoch,omitempty"`
	Token  string      `json:"token"`
	Runs   [][2]uint64 `json:"runs"` // sorted, disjoint inclusive ranges of stream sequences
	State  string      `json:"state"`
	Writer string      `json:"writer"`
	// Days is the retention each organization's rows are stamped with (only those other than 0),
	// fixed when the batch is recorded, so every INSERT of the batch puts a row in the same
	// partition whatever retention changes come later.
	Days map[string]uint16 `json:"days,omitempty"`
	// Split lists the pieces (split.go) ClickHouse refused as too large or as data, which are
	// inserted as their two halves instead. Recorded before the halves are inserted.
	Split []string `json:"split,omitempty"`

	key string // the ledger key
	rev uint64 // the bucket revision this version of the record was read or written at
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

func (r *batchRecord) isSplit(path string) bool { return slices.Contains(r.Split, path) }

// size is how many messages the batch holds.
func (r *batchRecord) size() int {
	n := 0
	for _, run := range r.Runs {
		n += int(run[1] - run[0] + 1)
	}
	return n
}

// of reports whether r is a batch of the valid stream created at epoch (Unix nanoseconds).
func (r *batchRecord) of(epoch int64) bool {
	if r.V >= recordVersion {
		return r.Epoch == epoch
	}
	// Version 0: the token is valid:<creation in Unix seconds>:...
	_, rest, _ := strings.Cut(r.Token, ":")
	secs, _, _ := strings.Cut(rest, ":")
	s, err := strconv.ParseInt(secs, 10, 64)
	return err == nil && s == epoch/1e9
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

func recordKey(epoch int64, first uint64) string { return fmt.Sprintf("b.%d.%d", epoch, first) }

// errLedgerMoved: another writer wrote to the ledger since this one last read it; read again and
// decide again.
var errLedgerMoved = errors.New("the batch ledger changed meanwhile")

// ledger is every writer's shared record of batches: a JetStream key-value bucket (file storage,
// fsynced like everything else), and this writer's copy of it in memory.
//
// A writer records a batch before its INSERT and again after it; a writer that receives a
// redelivered message looks it up here to learn whether it belongs to a batch that is already
// stored (ack it) or may be (insert that batch again, identically, under its tokens). A new batch
// is recorded only if nothing was written to the bucket since this writer last read all of it
// (JetStream's expected-last-sequence check on the bucket's stream), so two writers holding the
// same redelivered message can never both record it in batches of their own: the second learns of
// the first's record and settles the message with it.
//
// Records stay until the writer consumer's ack floor passes their last sequence (then no message
// of theirs can be delivered again, however long an outage lasted) or until they belong to a
// stream that no longer exists; prune removes them from the bucket and from memory. The bucket has
// no TTL: a record must outlive every redelivery of its messages.
type ledger struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream
	log    *slog.Logger

	mu      sync.Mutex
	recs    map[string]*batchRecord
	applied uint64 // every bucket message up to this sequence is reflected in recs
	byLast  []*batchRecord
	dirty   bool
}

func openLedger(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*ledger, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketBatches,
		Description: "Logbook writer batch records (pruned by the writer consumer's ack floor)",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketBatches, err)
	}
	stream, err := js.Stream(ctx, natsx.KVStream(BucketBatches))
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", BucketBatches, err)
	}
	l := &ledger{js: js, kv: kv, stream: stream, log: log, recs: map[string]*batchRecord{}}
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// load reads every record in the bucket.
func (l *ledger) load(ctx context.Context) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read bucket %s: %w", BucketBatches, err)
	}
	w, err := l.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("failed to read bucket %s: %w", BucketBatches, err)
	}
	defer func() { _ = w.Stop() }()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applied = info.State.LastSeq
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to read bucket %s: %w", BucketBatches, ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			l.apply(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
			l.applied = max(l.applied, e.Revision())
		}
	}
}

// apply takes a bucket message into memory; must be called with mu held.
func (l *ledger) apply(key string, value []byte, rev uint64, deleted bool) {
	if old := l.recs[key]; old != nil && old.rev >= rev {
		return // already newer here (this writer's own update)
	}
	l.dirty = true
	if deleted {
		delete(l.recs, key)
		return
	}
	var r batchRecord
	if err := json.Unmarshal(value, &r); err != nil || len(r.Runs) == 0 {
		l.log.Error("skipping unreadable batch record", "key", key, "err", err)
		return
	}
	r.key, r.rev = key, rev
	l.recs[key] = &r
}

// catchUp reads the bucket messages written since the last read, up to the stream's end.
func (l *ledger) catchUp(ctx context.Context) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read bucket %s: %w", BucketBatches, err)
	}
	l.mu.Lock()
	from := l.applied + 1
	l.mu.Unlock()
	for seq := from; seq <= info.State.LastSeq; seq++ {
		m, err := natsx.GetSeq(ctx, l.js, natsx.KVStream(BucketBatches), seq) // the leader's copy: a replica's may lag
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // replaced by a later revision of its key, or pruned
		}
		if err != nil {
			return fmt.Errorf("failed to read batch record %d: %w", seq, err)
		}
		key := strings.TrimPrefix(m.Subject, "$KV."+BucketBatches+".")
		op := m.Header.Get("KV-Operation")
		l.mu.Lock()
		l.apply(key, m.Data, m.Sequence, op == "DEL" || op == "PURGE")
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.applied = max(l.applied, info.State.LastSeq)
	l.mu.Unlock()
	return nil
}

// create records a new batch, unless the bucket changed since this writer last read it
// (errLedgerMoved): then some of the batch's messages may already be in another writer's record.
func (l *ledger) create(ctx context.Context, r *batchRecord) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	expect := l.applied
	l.mu.Unlock()
	m := nats.NewMsg(natsx.KVSubject(BucketBatches, r.key))
	m.Data = raw
	pa, err := l.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(expect))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return errLedgerMoved
	}
	if err != nil {
		return fmt.Errorf("failed to record batch %s: %w", r.Token, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r.rev = pa.Sequence
	l.recs[r.key] = r
	l.applied = max(l.applied, pa.Sequence) // nothing else was written in between: the check above
	l.dirty = true
	return nil
}

// update writes r's new version, unless another writer changed the record since r was read
// (errLedgerMoved: read it again with get).
func (l *ledger) update(ctx context.Context, r *batchRecord) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rev, err := l.kv.Update(ctx, r.key, raw, r.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return errLedgerMoved
	}
	if err != nil {
		return fmt.Errorf("failed to record batch %s as %s: %w", r.Token, r.State, err)
	}
	l.remember(r, rev)
	return nil
}

// put writes r whatever the record holds now: for the final state, after which nothing else
// about the batch matters.
func (l *ledger) put(ctx context.Context, r *batchRecord) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rev, err := l.kv.Put(ctx, r.key, raw)
	if err != nil {
		return fmt.Errorf("failed to record batch %s as %s: %w", r.Token, r.State, err)
	}
	l.remember(r, rev)
	return nil
}

func (l *ledger) remember(r *batchRecord, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.rev = rev
	if old := l.recs[r.key]; old == nil || old.rev < rev {
		l.recs[r.key] = r
		l.dirty = true
	}
}

// get reads the record under key from the bucket's leader (not from memory, and not from a
// replica, which can lack a record the leader acknowledged: natsx.GetLast): nil when there is
// none, which means it was pruned, so every message of it was acknowledged.
func (l *ledger) get(ctx context.Context, key string) (*batchRecord, error) {
	m, err := natsx.GetLast(ctx, l.js, natsx.KVStream(BucketBatches), natsx.KVSubject(BucketBatches, key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read batch record %s: %w", key, err)
	}
	var r batchRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("failed to read batch record %s: %w", key, err)
	}
	r.key, r.rev = key, m.Sequence
	l.mu.Lock()
	l.apply(key, m.Data, m.Sequence, false)
	l.mu.Unlock()
	return &r, nil
}

// covering returns the record of the stream created at epoch that holds sequence seq, or nil.
// Records are kept sorted by their last sequence, so a new message (past every recorded batch,
// the common case) costs one comparison and an older one scans only the batches that end after it.
func (l *ledger) covering(epoch int64, seq uint64) *batchRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirty {
		l.index()
	}
	i, _ := slices.BinarySearchFunc(l.byLast, seq, func(r *batchRecord, s uint64) int { return cmp.Compare(r.last(), s) })
	for _, r := range l.byLast[i:] {
		if r.first() <= seq && r.contains(seq) && r.of(epoch) {
			c := *r
			return &c
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

// prune removes, from the bucket and from memory, the records of the stream created at epoch
// whose messages the writer consumer has all acknowledged (the last sequence is at or below the
// ack floor: JetStream never delivers those again), and the records of older streams. Every
// writer prunes; removing a record twice is harmless. It returns how many records it removed.
func (l *ledger) prune(ctx context.Context, epoch int64, ackFloor uint64) (int, error) {
	l.mu.Lock()
	var done []*batchRecord
	for _, r := range l.recs {
		if r.of(epoch) && r.last() <= ackFloor || !r.of(epoch) && r.older(epoch) {
			done = append(done, r)
		}
	}
	l.mu.Unlock()
	n := 0
	for _, r := range done {
		// A stream purge of the key's subject, not a key-value delete: it leaves no marker behind
		// (nothing accumulates) and moves no sequence (no other writer's create has to retry).
		if err := l.stream.Purge(ctx, jetstream.WithPurgeSubject(natsx.KVSubject(BucketBatches, r.key))); err != nil {
			return n, fmt.Errorf("failed to prune batch record %s: %w", r.key, err)
		}
		l.mu.Lock()
		if cur := l.recs[r.key]; cur != nil && cur.rev <= r.rev {
			delete(l.recs, r.key)
			l.dirty = true
		}
		l.mu.Unlock()
		n++
	}
	return n, nil
}

// older reports whether r belongs to a stream created before epoch.
func (r *batchRecord) older(epoch int64) bool {
	if r.V >= recordVersion {
		return r.Epoch < epoch
	}
	return !r.of(epoch) // version 0 records of another stream: older than any writer writing them now
}

// count is how many records this writer holds in memory.
func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}
