// Package batcher is the writer: it reads the valid stream through a durable consumer that all
// replicas share, gathers events into batches by size and time, stores each batch with one INSERT,
// and acknowledges the batch's messages only after the INSERT succeeded. A failed INSERT is retried
// with backoff, never dropped; while it retries, the messages are kept from redelivery.
package batcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
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
}

// Writer stores validated events. Run it in as many replicas as needed.
type Writer struct {
	js    jetstream.JetStream
	cons  jetstream.Consumer
	store inserter
	cfg   Config
	log   *slog.Logger
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
	return &Writer{js: js, cons: cons, store: store, cfg: cfg, log: log}, nil
}

// Run writes until ctx is done; the batch in hand is flushed before it returns.
func (w *Writer) Run(ctx context.Context) error {
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

// flush stores msgs with one INSERT, retrying until it succeeds (or stop ends and the messages are
// left to redelivery), then acks them. Undecodable messages, which the validator never passes on,
// are moved to the rejected stream instead of blocking the batch.
func (w *Writer) flush(ctx, stop context.Context, msgs []jetstream.Msg) {
	recs := make([]*event.Record, 0, len(msgs))
	keep := msgs[:0:0]
	for _, m := range msgs {
		rec, err := event.Unmarshal(m.Data())
		if err != nil {
			w.deadLetter(ctx, m, err)
			continue
		}
		recs = append(recs, rec)
		keep = append(keep, m)
	}
	if len(recs) == 0 {
		return
	}
	token := batchToken(keep, recs)
	start := time.Now()
	backoff := 100 * time.Millisecond
	// Keep JetStream from handing the batch to another writer while an INSERT is running (it may
	// take up to InsertTimeout, longer than AckWait) or being retried: that writer could group the
	// messages differently, and a different token would store them twice.
	stopProgress := keepInProgress(keep, w.cfg.AckWait/3)
	defer stopProgress()
	for attempt := 1; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, w.cfg.InsertTimeout)
		err := w.store.Insert(ictx, token, recs)
		cancel()
		if err == nil {
			break
		}
		w.log.Error("insert failed; retrying", "batch_size", len(recs), "token", token, "attempt", attempt, "err", err)
		if stop.Err() != nil {
			return // shutting down: the messages are redelivered to a writer that can store them
		}
		sleep(stop, backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
	stopProgress()
	for _, m := range keep {
		if err := m.Ack(); err != nil {
			w.log.Warn("ack failed (the batch will be redelivered and deduplicated)", "err", err)
		}
	}
	w.log.Debug("batch stored", "batch_size", len(recs), "token", token, "duration", time.Since(start))
}

// batchToken derives the INSERT deduplication token from the batch's identity: its stream sequence
// range and a digest of its event ids. The same batch re-inserted gets the same token (and is
// skipped by ClickHouse); a different batch can never share a token, so dedup can never drop data.
func batchToken(msgs []jetstream.Msg, recs []*event.Record) string {
	var first, last uint64
	if meta, err := msgs[0].Metadata(); err == nil {
		first = meta.Sequence.Stream
	}
	if meta, err := msgs[len(msgs)-1].Metadata(); err == nil {
		last = meta.Sequence.Stream
	}
	h := sha256.New()
	for _, r := range recs {
		h.Write([]byte(r.OrganizationID))
		h.Write([]byte{0})
		h.Write([]byte(r.ID))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("valid:%d-%d:%s", first, last, hex.EncodeToString(h.Sum(nil)[:12]))
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
