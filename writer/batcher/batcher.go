// Package batcher is the writer: it reads the valid stream through a durable consumer that all
// replicas share, gathers events into batches by rows, bytes and time, stores each batch with as
// few INSERTs as ClickHouse accepts, and acknowledges the batch's messages only after they are
// stored. A failed INSERT is retried with backoff while ClickHouse is unavailable, and split when
// ClickHouse refuses it for a reason retrying cannot change (split.go); nothing is dropped. Every
// message is kept in progress from the moment it is fetched until it is settled, so JetStream
// does not hand it to another writer meanwhile.
//
// Exactly once, across crashes and replicas: each batch is recorded in a shared ledger (a
// JetStream key-value bucket, ledger.go) before its first INSERT and again after its last, with
// the stream sequences it holds; its INSERT deduplication tokens are derived from those
// sequences. A batch is recorded only from messages no other writer's record holds (the bucket is
// checked and written in one conditional step), and the record is read again right before each
// INSERT. A writer receiving a redelivered message looks it up in the ledger: a batch recorded as
// stored is only acked; a batch recorded before its INSERTs is rebuilt from the stream and inserted
// again, identically, which ClickHouse skips where the first attempt had landed.
package batcher

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/store"
)

// Config tunes the writer.
type Config struct {
	// MaxRows flushes a batch at this many events. Default 10,000 (ClickHouse advises 10k–100k rows
	// per INSERT).
	MaxRows int
	// MaxBytes flushes a batch once its messages reach this many bytes (as JetStream delivers
	// them), so large events make smaller batches and an INSERT's memory stays bounded. Default
	// 16 MiB: about 20,000 typical 800-byte events, so rows usually decide; 18 events of the
	// largest size the gateway accepts (900 KiB).
	MaxBytes int
	// MaxWait flushes a batch this long after its first event arrived. Default 400 ms: an event
	// is searchable within a second of its 2xx (the wait, the validator hop and the INSERT) while a
	// single writer makes at most a few INSERTs a second at low traffic (ClickHouse advises about
	// one a second per table; under load, batches fill to MaxRows first).
	MaxWait time.Duration
	// InsertTimeout bounds one INSERT attempt. Default 60 s.
	InsertTimeout time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering. Default 60 s; the writer
	// tells JetStream every AckWait/3 that the messages it holds are still in progress.
	AckWait time.Duration
	// PruneEvery is how often the writer removes ledger records the consumer's ack floor has
	// passed. Default 1 minute.
	PruneEvery time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxRows: 10_000, MaxBytes: 16 << 20, MaxWait: 400 * time.Millisecond, InsertTimeout: 60 * time.Second,
		AckWait: 60 * time.Second, PruneEvery: time.Minute}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxRows < 1 || c.MaxRows > 1_000_000:
		return errors.New("writer batch rows must be between 1 and 1,000,000")
	case c.MaxBytes < 64<<10 || c.MaxBytes > 1<<30:
		return errors.New("writer batch bytes must be between 64 KiB and 1 GiB")
	case c.MaxWait <= 0:
		return errors.New("writer batch wait must be positive")
	case c.AckWait < 2*c.MaxWait:
		return errors.New("writer ack wait must be at least twice the batch wait")
	case c.PruneEvery <= 0:
		return errors.New("writer ledger prune interval must be positive")
	}
	return nil
}

// Store is where the writer stores events (a *store.Store, possibly decorated).
type Store interface {
	// InsertWithRetention stores recs in one INSERT deduplicated by token, each row stamped with
	// days(its organization).
	InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days store.Retention) error
	// StoredIDs reports which of recs' events are stored already.
	StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error)
}

// Writer stores validated events. Run it in as many replicas as needed.
type Writer struct {
	js        jetstream.JetStream
	cons      jetstream.Consumer
	store     Store
	retention store.Retention
	ledger    *ledger
	held      *holder
	cfg       Config
	log       *slog.Logger
	id        string // names this writer in batch records, for operators
	// streamEpoch is the valid stream's creation time (Unix nanoseconds), part of every ledger key
	// and token: a recreated stream's sequences never meet an old stream's records.
	streamEpoch int64
	lastPrune   time.Time
	maxParts    int // partitions per INSERT: store.MaxPartitionsPerInsert (tests use fewer)
}

// New creates (or joins) the durable writer consumer on the valid stream.
func New(ctx context.Context, js jetstream.JetStream, st Store, cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamValid, jetstream.ConsumerConfig{
		Durable:       event.ConsumerWriter,
		Description:   "Logbook writer replicas",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: 2 * cfg.MaxRows, // room for a full batch in hand plus the next one
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create consumer %s: %w", event.ConsumerWriter, err)
	}
	info, err := js.Stream(ctx, event.StreamValid)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", event.StreamValid, err)
	}
	led, err := openLedger(ctx, js, info.CachedInfo().Config.Replicas, log)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &Writer{
		js: js, cons: cons, store: st, ledger: led, cfg: cfg, log: log,
		retention:   func(string) uint16 { return 0 },
		held:        newHolder(cfg.AckWait / 3),
		id:          fmt.Sprintf("%s/%d/%s", host, os.Getpid(), nuid.Next()),
		streamEpoch: info.CachedInfo().Created.UnixNano(),
		lastPrune:   time.Now(),
		maxParts:    store.MaxPartitionsPerInsert,
	}, nil
}

// UseRetention stamps each row with days(its organization) (default 0: kept forever). The stamp
// is fixed when a batch is recorded. Call it before Run.
func (w *Writer) UseRetention(days store.Retention) { w.retention = days }

// Run writes until ctx is done; the batch in hand is finished before it returns.
func (w *Writer) Run(ctx context.Context) error {
	defer w.held.stop()
	for ctx.Err() == nil {
		msgs := w.collect(ctx)
		if len(msgs) > 0 {
			w.flush(context.WithoutCancel(ctx), ctx, msgs)
		}
		if time.Since(w.lastPrune) >= w.cfg.PruneEvery {
			w.prune(ctx)
		}
	}
	return nil
}

// collect waits up to MaxWait for a first message, then gathers more until MaxRows, MaxBytes, or
// MaxWait after that first one. Every message is held in progress from here on.
func (w *Writer) collect(ctx context.Context) []jetstream.Msg {
	var msgs []jetstream.Msg
	var deadline time.Time
	bytes := 0
	for ctx.Err() == nil && len(msgs) < w.cfg.MaxRows && bytes < w.cfg.MaxBytes {
		n, opts := 1, []jetstream.FetchOpt{jetstream.FetchMaxWait(w.cfg.MaxWait)}
		if len(msgs) > 0 {
			wait := time.Until(deadline)
			if wait < time.Millisecond {
				break
			}
			// A message that does not fit the bytes left stays for the next batch.
			n, opts = w.cfg.MaxRows-len(msgs), []jetstream.FetchOpt{jetstream.FetchMaxWait(wait), jetstream.FetchMaxBytes(w.cfg.MaxBytes - bytes)}
		}
		batch, err := w.cons.Fetch(n, opts...)
		if err != nil {
			w.log.Warn("fetch failed", "consumer", event.ConsumerWriter, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for m := range batch.Messages() {
			w.held.add(m)
			if len(msgs) == 0 {
				deadline = time.Now().Add(w.cfg.MaxWait)
			}
			msgs = append(msgs, m)
			bytes += len(m.Data()) + len(m.Subject())
		}
		err = batch.Error()
		if errors.Is(err, jetstream.ErrMaxBytesExceeded) {
			break // the next message does not fit: this batch is full
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) {
			w.log.Warn("fetch ended with error", "consumer", event.ConsumerWriter, "err", err)
		}
		if len(msgs) == 0 {
			break // nothing came within MaxWait: back to Run, which has other chores
		}
	}
	return msgs
}

// item is a fetched message with its stream sequence and decoded record.
type item struct {
	seq uint64
	msg jetstream.Msg
	rec *event.Record
}

// flush settles msgs. Messages that belong to a batch some writer recorded are settled with that
// batch: acked if it is stored, or after inserting it again, identically, if it may not be. The
// rest form a new batch, recorded only if no other writer recorded any of them meanwhile.
func (w *Writer) flush(ctx, stop context.Context, msgs []jetstream.Msg) {
	items := make([]item, 0, len(msgs))
	at := map[uint64]int{} // stream sequence → its item
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			w.log.Error("message without metadata; leaving it for redelivery", "err", err)
			w.held.release(m)
			continue
		}
		// JetStream delivers a message again once AckWait passes without word from this writer (a
		// pause of the process), possibly to this very collect: the batch holds each message once,
		// its latest delivery (an ack of it settles the message whichever delivery it answers).
		if i, dup := at[meta.Sequence.Stream]; dup {
			w.held.release(items[i].msg)
			items[i].msg = m
			continue
		}
		rec, err := event.Unmarshal(m.Data())
		if err != nil {
			w.deadLetter(ctx, m, err)
			continue
		}
		at[meta.Sequence.Stream] = len(items)
		items = append(items, item{meta.Sequence.Stream, m, rec})
	}
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
	backoff := 100 * time.Millisecond
	for len(items) > 0 {
		// Every message is looked up, not only those JetStream marks as redelivered: after a crash
		// the consumer's delivery counts may be gone, and a message delivered before looks new.
		var fresh []item
		recorded := map[string][]item{}
		records := map[string]*batchRecord{}
		for _, it := range items {
			if r := w.ledger.covering(w.streamEpoch, it.seq); r != nil {
				recorded[r.key] = append(recorded[r.key], it)
				records[r.key] = r
				continue
			}
			fresh = append(fresh, it)
		}
		for key, its := range recorded {
			if !w.settleRecorded(ctx, stop, records[key], its) {
				return // shutting down: what is left is redelivered to a writer that can go on
			}
		}
		if fresh = w.dropAcked(ctx, stop, fresh); len(fresh) == 0 {
			return
		}
		r := w.newRecord(fresh)
		err := w.ledger.create(ctx, r)
		if errors.Is(err, errLedgerMoved) {
			// Another writer wrote to the ledger since this one read it: read what it wrote and
			// look the fresh messages up again (some may now be in that writer's batch).
			if !w.retry(stop, "read the batch ledger", func() error { return w.ledger.catchUp(ctx) }) {
				w.held.release(msgsOf(fresh)...)
				return
			}
			items = fresh
			continue
		}
		if err != nil {
			w.log.Error("record batch failed; retrying", "err", err)
			if stop.Err() != nil {
				w.held.release(msgsOf(fresh)...)
				return
			}
			sleep(stop, backoff)
			backoff = min(2*backoff, 10*time.Second)
			items = fresh
			continue
		}
		failpoint.Inject("writer-after-record")
		w.storeFresh(ctx, stop, r, fresh)
		return
	}
}

// dropAcked acks and leaves out the items at or below the writer consumer's ack floor: those were
// acknowledged, so they are stored, but their batch's record may be gone, since prune purges a
// record once the ack floor passes it and leaves nothing a catch-up could find. Recorded in a batch
// of their own they would be stored twice (a writer that held them past AckWait while another
// stored, acked and pruned them). The floor is read after the items were looked up in the ledger:
// a record pruned before that lookup was passed by the floor read here, and one pruned after it
// was found. Nil when stop ended first (the items are released).
func (w *Writer) dropAcked(ctx, stop context.Context, items []item) []item {
	if len(items) == 0 {
		return nil
	}
	var floor uint64
	if !w.retry(stop, "read the writer consumer", func() error {
		info, err := w.cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("failed to read consumer %s: %w", event.ConsumerWriter, err)
		}
		floor = info.AckFloor.Stream
		return nil
	}) {
		w.held.release(msgsOf(items)...)
		return nil
	}
	var acked []item
	keep := items[:0:0]
	for _, it := range items {
		if it.seq <= floor {
			acked = append(acked, it)
			continue
		}
		keep = append(keep, it)
	}
	if len(acked) > 0 {
		w.log.Warn("acking messages another writer stored and acknowledged meanwhile", "messages", len(acked), "ack_floor", floor)
		w.ack(msgsOf(acked))
	}
	return keep
}

// newRecord describes a new batch of items (in sequence order).
func (w *Writer) newRecord(items []item) *batchRecord {
	seqs := make([]uint64, len(items))
	days := map[string]uint16{}
	for i, it := range items {
		seqs[i] = it.seq
		if d := w.retention(it.rec.OrganizationID); d != 0 {
			days[it.rec.OrganizationID] = d
		}
	}
	runs := runsOf(seqs)
	return &batchRecord{
		V: recordVersion, Epoch: w.streamEpoch, Token: w.batchToken(runs), Runs: runs, State: stateBefore,
		Writer: w.id, Days: days, key: recordKey(w.streamEpoch, runs[0][0]),
	}
}

// settleRecorded settles items, messages of the recorded batch r: they are only acked if r is
// stored; else r is rebuilt from the stream and stored again. False when stop ended first.
func (w *Writer) settleRecorded(ctx, stop context.Context, r *batchRecord, items []item) bool {
	if r.State == stateAfter {
		w.ack(msgsOf(items))
		return true
	}
	var recs []*event.Record
	if !w.retry(stop, "re-read batch", func() (err error) {
		recs, err = w.readBatch(ctx, r)
		return err
	}) {
		w.held.release(msgsOf(items)...)
		return false
	}
	w.log.Warn("re-driving a batch another writer recorded but did not finish", "token", r.Token,
		"batch_size", len(recs), "writer_id", r.Writer)
	return w.storeRecords(ctx, stop, r, recs, msgsOf(items))
}

// storeFresh stores the new batch r of items.
func (w *Writer) storeFresh(ctx, stop context.Context, r *batchRecord, items []item) {
	recs := make([]*event.Record, len(items))
	for i, it := range items {
		recs[i] = it.rec
	}
	w.storeRecords(ctx, stop, r, recs, msgsOf(items))
}

// errSettled: the batch's record says it is stored, or it was pruned (every message of it was
// acknowledged): another writer finished it.
var errSettled = errors.New("batch settled by another writer")

// storeRecords inserts the recorded batch r (recs, in sequence order) piece by piece, records it
// as stored and acks msgs. False when stop ended first (msgs are left to redelivery).
func (w *Writer) storeRecords(ctx, stop context.Context, r *batchRecord, recs []*event.Record, msgs []jetstream.Msg) bool {
	start := time.Now()
	days := func(org string) uint16 { return r.Days[org] }
	if r.V < recordVersion {
		days = w.retention // a record from before retention stamps were recorded
	}
	var err error
	for _, p := range groups(recs, days, w.maxParts) {
		if err = w.storePiece(ctx, stop, r, p, days); err != nil {
			break
		}
	}
	switch {
	case errors.Is(err, errSettled):
		w.log.Info("batch stored by another writer meanwhile", "token", r.Token)
	case err != nil:
		w.held.release(msgs...)
		return false
	default:
		failpoint.Inject("writer-after-insert")
		after := *r
		after.State = stateAfter
		if err := w.ledger.put(ctx, &after); err != nil {
			// Harmless: should the acks below be lost too, a redelivery finds the batch recorded as
			// "before" and inserts it again under the same tokens, which ClickHouse skips.
			w.log.Warn("could not record batch as stored", "token", r.Token, "err", err)
		}
	}
	failpoint.Inject("writer-before-ack")
	w.ack(msgs)
	w.log.Debug("batch stored", "batch_size", len(recs), "token", r.Token, "duration", time.Since(start))
	return true
}

// storePiece stores piece p of the recorded batch r: one INSERT, retried while ClickHouse is
// unavailable, or its two halves when r records it as split or ClickHouse refuses it for good.
// It returns errSettled when another writer finished the batch, and stop's error when stopped.
func (w *Writer) storePiece(ctx, stop context.Context, r *batchRecord, p piece, days store.Retention) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if r.isSplit(p.path) {
			for _, h := range p.halves() {
				if err := w.storePiece(ctx, stop, r, h, days); err != nil {
					return err
				}
			}
			return nil
		}
		err := w.insertPiece(ctx, r, p, days)
		if err == nil || errors.Is(err, errSettled) {
			return err
		}
		if errors.Is(err, errLedgerMoved) {
			continue // r was read again: follow what it says now
		}
		refusal := store.Classify(err)
		switch {
		case refusal == store.RefusedData && len(p.recs) == 1:
			if err := w.rejectRow(ctx, p.recs[0], err); err == nil {
				return nil
			}
		case refusal != store.Unavailable && len(p.recs) > 1:
			w.log.Error("clickhouse refused an INSERT for good; splitting it", "token", r.Token, "piece", p.path,
				"rows", len(p.recs), "refusal", refusal, "err", err)
			err := w.split(ctx, r, p.path)
			if errors.Is(err, errSettled) {
				return err
			}
			if err == nil || errors.Is(err, errLedgerMoved) {
				continue // now recorded as split (by this writer or another): insert the halves
			}
			w.log.Error("could not record the split; retrying", "token", r.Token, "piece", p.path, "err", err)
		default:
			w.log.Error("insert failed; retrying", "token", r.Token, "piece", p.path, "attempt", attempt, "err", err)
		}
		if stop.Err() != nil {
			return stop.Err() // shutting down: the messages are redelivered to a writer that can go on
		}
		sleep(stop, backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
}

// insertPiece runs p's INSERT, after reading r again from the ledger: if another writer finished
// the batch (errSettled) or changed its record (errLedgerMoved, r is then updated), nothing is
// inserted. A half leaves out the rows already stored.
func (w *Writer) insertPiece(ctx context.Context, r *batchRecord, p piece, days store.Retention) error {
	recs := p.recs
	if p.filtered {
		stored, err := w.store.StoredIDs(ctx, p.recs)
		if err != nil {
			return err
		}
		recs = slices.DeleteFunc(slices.Clone(p.recs), func(rec *event.Record) bool { return stored[rec.ID] })
		if len(recs) == 0 {
			return nil
		}
	}
	if err := w.reread(ctx, r); err != nil {
		return err
	}
	failpoint.Inject("writer-before-insert")
	ictx, cancel := context.WithTimeout(ctx, w.cfg.InsertTimeout)
	defer cancel()
	return w.store.InsertWithRetention(ictx, pieceToken(r.Token, p.path, p.filtered, recs), recs, days)
}

// reread checks r against the ledger right before an INSERT: errSettled if the batch is stored
// or pruned, errLedgerMoved (and r updated) if another writer changed the record since r was read.
func (w *Writer) reread(ctx context.Context, r *batchRecord) error {
	cur, err := w.ledger.get(ctx, r.key)
	switch {
	case err != nil:
		return err
	case cur == nil:
		// Pruned, if the consumer's ack floor has passed the batch (prune's condition); otherwise
		// the record must still be there, and a read that misses it is not a reason to skip it.
		return w.pruned(ctx, r)
	case cur.State == stateAfter:
		return errSettled
	case cur.rev != r.rev:
		*r = *cur
		return errLedgerMoved
	}
	return nil
}

// errRecordMissing: a batch's record could not be read although the consumer's ack floor has not
// passed the batch, so it was not pruned; the INSERT waits and reads it again.
var errRecordMissing = errors.New("batch record missing before the ack floor passed it")

// pruned returns errSettled if r's record was pruned (the writer consumer's ack floor passed its
// last message, so every message of it was acknowledged), errRecordMissing otherwise.
func (w *Writer) pruned(ctx context.Context, r *batchRecord) error {
	info, err := w.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read consumer %s: %w", event.ConsumerWriter, err)
	}
	if info.AckFloor.Stream >= r.last() {
		return errSettled
	}
	return fmt.Errorf("%w: %s (ack floor %d, batch ends at %d)", errRecordMissing, r.key, info.AckFloor.Stream, r.last())
}

// split records piece path of r as split, so that every writer inserts its halves from now on.
func (w *Writer) split(ctx context.Context, r *batchRecord, path string) error {
	next := *r
	next.Split = append(slices.Clone(r.Split), path)
	slices.Sort(next.Split)
	err := w.ledger.update(ctx, &next)
	if errors.Is(err, errLedgerMoved) {
		return w.reread(ctx, r)
	}
	if err != nil {
		return err
	}
	*r = next
	return nil
}

// readBatch reads r's messages from the valid stream, in sequence order.
func (w *Writer) readBatch(ctx context.Context, r *batchRecord) ([]*event.Record, error) {
	c, err := w.js.OrderedConsumer(ctx, event.StreamValid, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: r.first(),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read batch %s: %w", r.Token, err)
	}
	var recs []*event.Record
	for seq := r.first(); seq <= r.last(); {
		batch, err := c.Fetch(int(min(r.last()-seq+1, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("failed to read batch %s: %w", r.Token, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("failed to read batch %s: %w", r.Token, err)
			}
			seq = meta.Sequence.Stream + 1
			if meta.Sequence.Stream > r.last() || !r.contains(meta.Sequence.Stream) {
				continue
			}
			rec, err := event.Unmarshal(m.Data())
			if err != nil {
				continue // dead-lettered when the batch was first built, so never part of it
			}
			recs = append(recs, rec)
		}
		if n == 0 {
			return nil, fmt.Errorf("failed to read batch %s: stream ended at %d before %d", r.Token, seq, r.last())
		}
	}
	return recs, nil
}

// prune removes the ledger records the consumer's ack floor has passed. It reads what other
// writers recorded first, so the records of a writer that is gone are pruned too.
func (w *Writer) prune(ctx context.Context) {
	w.lastPrune = time.Now()
	if err := w.ledger.catchUp(ctx); err != nil {
		w.log.Warn("could not read the batch ledger to prune it", "err", err)
		return
	}
	info, err := w.cons.Info(ctx)
	if err != nil {
		w.log.Warn("could not read the writer consumer to prune the batch ledger", "err", err)
		return
	}
	n, err := w.ledger.prune(ctx, w.streamEpoch, info.AckFloor.Stream)
	if err != nil {
		w.log.Warn("could not prune the batch ledger", "err", err)
	}
	if n > 0 {
		w.log.Debug("pruned batch records", "records", n, "ack_floor", info.AckFloor.Stream)
	}
}

func (w *Writer) rejectRow(ctx context.Context, rec *event.Record, cause error) error {
	data, err := rec.Marshal()
	if err != nil {
		return err
	}
	out := nats.NewMsg(event.RejectedSubject(rec.OrganizationID))
	out.Data = data
	out.Header.Set(event.HeaderRejectReason, truncate("clickhouse refused the row: "+cause.Error(), 2048))
	out.Header.Set(event.HeaderRejectCategory, event.RejectStoreRefused)
	out.Header.Set(event.HeaderRejectSide, event.SideInput)
	out.Header.Set(jetstream.MsgIDHeader, "writer:"+rec.MsgID())
	if _, err := w.js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("failed to dead-letter event %s: %w", rec.ID, err)
	}
	w.log.Error("event refused by clickhouse moved to the rejected stream", "event_id", rec.ID, "org_id", rec.OrganizationID, "err", cause)
	return nil
}

// retry runs op until it succeeds, backing off up to 10 s; false when stop ended first.
func (w *Writer) retry(stop context.Context, what string, op func() error) bool {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return true
		}
		w.log.Error(what+" failed; retrying", "attempt", attempt, "err", err)
		if stop.Err() != nil {
			return false // shutting down: the messages are redelivered to a writer that can go on
		}
		sleep(stop, backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
}

// ack acknowledges msgs and stops holding them.
func (w *Writer) ack(msgs []jetstream.Msg) {
	w.held.release(msgs...)
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			w.log.Warn("ack failed (the message will be redelivered and settled from the ledger)", "err", err)
		}
	}
}

func msgsOf(items []item) []jetstream.Msg {
	out := make([]jetstream.Msg, len(items))
	for i, it := range items {
		out[i] = it.msg
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// batchToken derives the INSERT deduplication token from the batch's identity: the valid stream
// (its creation time, so a recreated stream never reuses tokens) and the batch's sequences. The
// same batch inserted again gets the same token and ClickHouse skips it; two different batches can
// never share a token, so dedup can never drop data.
func (w *Writer) batchToken(runs [][2]uint64) string {
	h := sha256.New()
	for _, r := range runs {
		fmt.Fprintf(h, "%d-%d,", r[0], r[1])
	}
	return fmt.Sprintf("valid:%d:%d-%d:%s", w.streamEpoch, runs[0][0], runs[len(runs)-1][1], hex.EncodeToString(h.Sum(nil)[:12]))
}

func (w *Writer) deadLetter(ctx context.Context, m jetstream.Msg, cause error) {
	defer w.held.release(m)
	out := nats.NewMsg(event.RejectedSubject("_invalid"))
	out.Data = m.Data()
	out.Header.Set(event.HeaderRejectReason, "writer could not decode: "+cause.Error())
	if meta, err := m.Metadata(); err == nil {
		out.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("valid-seq:%d", meta.Sequence.Stream))
	}
	if _, err := w.js.PublishMsg(ctx, out); err != nil {
		w.log.Error("dead-letter publish failed; leaving message for redelivery", "err", err)
		return
	}
	w.log.Error("undecodable message moved to the rejected stream", "subject", m.Subject(), "err", cause)
	_ = m.Term()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
