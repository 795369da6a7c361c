// Package batcher is the writer: it reads the valid stream through a durable consumer that all
// replicas share, gathers events into batches by size and time, stores each batch with one INSERT,
// and acknowledges the batch's messages only after the INSERT succeeded. A failed INSERT is retried
// with backoff, never dropped; while it retries, the messages are kept from redelivery.
//
// Exactly once, across crashes: each batch is recorded in a shared ledger (a JetStream key-value
// bucket) before its INSERT and again after it, with the stream sequences it holds; its INSERT
// deduplication token is derived from those sequences. A writer receiving a redelivered message
// looks it up in the ledger: a batch recorded as stored is only acked; a batch recorded before its
// INSERT is rebuilt from the stream and inserted again under the same token, which ClickHouse skips
// if the first INSERT had landed. So a writer killed at any point loses nothing and doubles nothing.
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
	"sync"
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
	// MaxWait flushes a batch this long after its first event arrived. Default 1 s (ClickHouse
	// advises about one INSERT per second per table).
	MaxWait time.Duration
	// InsertTimeout bounds one INSERT attempt. Default 60 s.
	InsertTimeout time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering. Default 60 s; the writer
	// extends it while a batch is pending or retrying.
	AckWait time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxRows: 10_000, MaxWait: time.Second, InsertTimeout: 60 * time.Second, AckWait: 60 * time.Second}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxRows < 1 || c.MaxRows > 1_000_000:
		return errors.New("writer batch rows must be between 1 and 1,000,000")
	case c.MaxWait <= 0:
		return errors.New("writer batch wait must be positive")
	case c.AckWait < 2*c.MaxWait:
		return errors.New("writer ack wait must be at least twice the batch wait")
	}
	return nil
}

type inserter interface {
	Insert(ctx context.Context, token string, recs []*event.Record) error
	StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error)
}

// Writer stores validated events. Run it in as many replicas as needed.
type Writer struct {
	js          jetstream.JetStream
	cons        jetstream.Consumer
	store       inserter
	ledger      *ledger
	cfg         Config
	log         *slog.Logger
	id          string // names this writer in batch records, for operators
	streamEpoch int64  // the valid stream's creation time, part of every token
}

// New creates (or joins) the durable writer consumer on the valid stream.
func New(ctx context.Context, js jetstream.JetStream, store inserter, cfg Config, log *slog.Logger) (*Writer, error) {
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
		js: js, cons: cons, store: store, ledger: led, cfg: cfg, log: log,
		id:          fmt.Sprintf("%s/%d/%s", host, os.Getpid(), nuid.Next()),
		streamEpoch: info.CachedInfo().Created.Unix(),
	}, nil
}

// Run writes until ctx is done; the batch in hand is flushed before it returns.
func (w *Writer) Run(ctx context.Context) error {
	defer w.ledger.close()
	for ctx.Err() == nil {
		msgs := w.collect(ctx)
		if len(msgs) > 0 {
			w.flush(context.WithoutCancel(ctx), ctx, msgs)
		}
	}
	return nil
}

// collect waits for a first message, then gathers more until MaxRows or until MaxWait has passed
// since that first one.
func (w *Writer) collect(ctx context.Context) []jetstream.Msg {
	var msgs []jetstream.Msg
	var deadline time.Time
	for ctx.Err() == nil && len(msgs) < w.cfg.MaxRows {
		n, wait := 1, w.cfg.MaxWait
		if len(msgs) > 0 {
			n, wait = w.cfg.MaxRows-len(msgs), time.Until(deadline)
			if wait < time.Millisecond {
				break
			}
		}
		batch, err := w.cons.Fetch(n, jetstream.FetchMaxWait(wait))
		if err != nil {
			w.log.Warn("fetch failed", "consumer", event.ConsumerWriter, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		for m := range batch.Messages() {
			if len(msgs) == 0 {
				deadline = time.Now().Add(w.cfg.MaxWait)
			}
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			w.log.Warn("fetch ended with error", "consumer", event.ConsumerWriter, "err", err)
		}
	}
	return msgs
}

// flush stores msgs. Redelivered messages that belong to a batch some writer recorded are settled
// with that batch: acked if it is stored, or after inserting it again, identically, if it may not
// be. The rest form a new batch.
func (w *Writer) flush(ctx, stop context.Context, msgs []jetstream.Msg) {
	var fresh []jetstream.Msg
	held := map[*batchRecord][]jetstream.Msg{}
	for _, m := range msgs {
		// Every message is looked up, not only those JetStream marks as redelivered: after a crash
		// the consumer's delivery counts may be gone, and a message delivered before looks new.
		if meta, err := m.Metadata(); err == nil {
			if r := w.ledger.covering(meta.Sequence.Stream); r != nil {
				held[r] = append(held[r], m)
				continue
			}
		}
		fresh = append(fresh, m)
	}
	for r, ms := range held {
		if r.State != stateAfter && !w.redrive(ctx, stop, r, ms) {
			return
		}
		ackAll(w.log, ms)
	}
	if len(fresh) > 0 {
		w.storeBatch(ctx, stop, fresh)
	}
}

// storeBatch records msgs as a batch, inserts it under a token derived from its stream sequences,
// records it as stored and acks it. Undecodable messages, which the validator never passes on, go
// to the rejected stream instead of blocking the batch.
func (w *Writer) storeBatch(ctx, stop context.Context, msgs []jetstream.Msg) {
	type item struct {
		seq uint64
		msg jetstream.Msg
		rec *event.Record
	}
	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			w.log.Error("message without metadata; leaving it for redelivery", "err", err)
			continue
		}
		rec, err := event.Unmarshal(m.Data())
		if err != nil {
			w.deadLetter(ctx, m, err)
			continue
		}
		items = append(items, item{meta.Sequence.Stream, m, rec})
	}
	if len(items) == 0 {
		return
	}
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
	seqs, recs, keep := make([]uint64, len(items)), make([]*event.Record, len(items)), make([]jetstream.Msg, len(items))
	for i, it := range items {
		seqs[i], recs[i], keep[i] = it.seq, it.rec, it.msg
	}
	// Keep JetStream from handing the batch to another writer while it is recorded, inserted (an
	// INSERT may take longer than AckWait) or retried.
	stopProgress := keepInProgress(keep, w.cfg.AckWait/3)
	defer stopProgress()
	runs := runsOf(seqs)
	r := &batchRecord{Token: w.batchToken(runs), Runs: runs, State: stateBefore, Writer: w.id}
	start := time.Now()
	if !w.retry(stop, "record batch", func() error { return w.ledger.put(ctx, r) }) {
		return
	}
	failpoint.Inject("writer-after-record")
	if !w.insert(ctx, stop, r.Token, recs) {
		return
	}
	failpoint.Inject("writer-after-insert")
	after := *r
	after.State = stateAfter
	if err := w.ledger.put(ctx, &after); err != nil {
		// Harmless: should the acks below be lost too, a redelivery finds the batch recorded as
		// "before" and inserts it again under the same token, which ClickHouse skips.
		w.log.Warn("could not record batch as stored", "token", r.Token, "err", err)
	}
	failpoint.Inject("writer-before-ack")
	stopProgress()
	ackAll(w.log, keep)
	w.log.Debug("batch stored", "batch_size", len(recs), "token", r.Token, "duration", time.Since(start))
}

// redrive inserts a recorded batch again, rebuilt from its stream sequences in the same order and
// under the same token, so ClickHouse stores it exactly once whether or not the first INSERT landed.
func (w *Writer) redrive(ctx, stop context.Context, r *batchRecord, held []jetstream.Msg) bool {
	stopProgress := keepInProgress(held, w.cfg.AckWait/3)
	defer stopProgress()
	var recs []*event.Record
	if !w.retry(stop, "re-read batch", func() (err error) {
		recs, err = w.readBatch(ctx, r)
		return err
	}) {
		return false
	}
	w.log.Warn("re-driving a batch another writer recorded but did not finish", "token", r.Token,
		"batch_size", len(recs), "writer_id", r.Writer)
	if !w.insert(ctx, stop, r.Token, recs) {
		return false
	}
	after := *r
	after.State = stateAfter
	if err := w.ledger.put(ctx, &after); err != nil {
		w.log.Warn("could not record batch as stored", "token", r.Token, "err", err)
	}
	return true
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

// insert stores recs under token, retrying until it succeeds or stop ends (false: the messages are
// left to redelivery). Rows ClickHouse refuses as data are isolated so they cannot block the rest.
func (w *Writer) insert(ctx, stop context.Context, token string, recs []*event.Record) bool {
	return w.retry(stop, "insert", func() error {
		ictx, cancel := context.WithTimeout(ctx, w.cfg.InsertTimeout)
		defer cancel()
		err := w.store.Insert(ictx, token, recs)
		if err != nil && store.IsDataError(err) && len(recs) > 0 {
			w.log.Error("clickhouse refused the batch's data; inserting its rows one by one", "token", token, "err", err)
			return w.insertEach(ctx, token, recs)
		}
		return err
	})
}

// insertEach inserts the rows not yet stored one at a time, each under its own token derived from
// the batch's, and sends a row ClickHouse refuses to the rejected stream with the reason.
func (w *Writer) insertEach(ctx context.Context, token string, recs []*event.Record) error {
	stored, err := w.store.StoredIDs(ctx, recs)
	if err != nil {
		return err
	}
	for i, rec := range recs {
		if stored[rec.ID] {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, w.cfg.InsertTimeout)
		err := w.store.Insert(ictx, fmt.Sprintf("%s:%d", token, i), []*event.Record{rec})
		cancel()
		if err == nil {
			continue
		}
		if !store.IsDataError(err) {
			return err
		}
		if err := w.rejectRow(ctx, rec, err); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) rejectRow(ctx context.Context, rec *event.Record, cause error) error {
	data, err := rec.Marshal()
	if err != nil {
		return err
	}
	out := nats.NewMsg(event.RejectedSubject(rec.OrganizationID))
	out.Data = data
	out.Header.Set(event.HeaderRejectReason, truncate("clickhouse refused the row: "+cause.Error(), 2048))
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

func ackAll(log *slog.Logger, msgs []jetstream.Msg) {
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			log.Warn("ack failed (the message will be redelivered and settled from the ledger)", "err", err)
		}
	}
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

// keepInProgress tells JetStream every interval that msgs are still being worked on, until the
// returned function is called (it may be called more than once).
func keepInProgress(msgs []jetstream.Msg, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-finished
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
