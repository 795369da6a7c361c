// Package worker is the validator: it reads the raw stream through a durable consumer that all
// replicas (and all loops of a process) share, applies each event's schema, and republishes the
// event unchanged to the valid stream or, with the reason, to the rejected stream.
//
// Only the input decides a dead letter: a record that cannot be decoded, breaks the rules or its
// schema, or crashes the validator. A failure on the output side (the valid or rejected stream
// refusing or not answering, schemas unreachable) is retried in process, with backoff, for as long
// as it lasts, while every message in hand is kept in progress so JetStream neither redelivers it
// nor counts a delivery. A raw message is acknowledged only after its republish was acknowledged;
// a crash in between is absorbed by the output streams' message-id dedup, and a republish that may
// fall outside their duplicate window first looks for the earlier copy (see republish.go).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
)

// Config tunes the validator.
type Config struct {
	// BatchSize is how many raw messages one fetch takes. Default 500.
	BatchSize int
	// FetchWait is how long a fetch waits for the first message. Default 1 s.
	FetchWait time.Duration
	// FetchLinger is how long a fetch that got its first message waits for more, up to BatchSize:
	// every batch costs an in-flight marker write and an atomic batch on the valid stream (about
	// 7 ms of nats-server work whatever its size), so a few milliseconds spent gathering divides
	// that cost among more events. Default 20 ms.
	FetchLinger time.Duration
	// AckWait is how long JetStream waits for an ack or a progress report before redelivering.
	// Messages in hand are reported in progress every AckWait/3, so it only expires when the
	// process is gone. Default 30 s.
	AckWait time.Duration
	// Loops is how many fetch-validate-publish loops the process runs on the shared consumer
	// (LOGBOOK_VALIDATORS). Default 1.
	Loops int
	// IsolateAfter is the delivery count from which a raw message is validated alone, under a
	// durable marker (bucket logbook_validator_attempts): a message delivered again means the
	// process holding it died (or stopped) before settling it, perhaps because of that very record.
	// Default 2.
	IsolateAfter int
	// CrashLimit is how many times the process may die while validating one record alone before
	// the record is dead-lettered as "validator crashed on it". Default 3.
	CrashLimit int
	// RetryBackoff and MaxRetryBackoff bound the wait between attempts while an output fails: it
	// starts at RetryBackoff and doubles up to MaxRetryBackoff. Defaults 100 ms and 5 s.
	RetryBackoff, MaxRetryBackoff time.Duration
	// DegradedAfter is how long outputs may fail (the oldest message waiting) before OutputCheck
	// reports it. Default 1 minute.
	DegradedAfter time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{BatchSize: 500, FetchWait: time.Second, FetchLinger: 20 * time.Millisecond, AckWait: 30 * time.Second, Loops: 1,
		IsolateAfter: 2, CrashLimit: 3, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 5 * time.Second,
		DegradedAfter: time.Minute}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct {
		v   *int
		def int
	}{{&c.BatchSize, d.BatchSize}, {&c.Loops, d.Loops}, {&c.IsolateAfter, d.IsolateAfter}, {&c.CrashLimit, d.CrashLimit}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.FetchWait, d.FetchWait}, {&c.FetchLinger, d.FetchLinger}, {&c.AckWait, d.AckWait}, {&c.RetryBackoff, d.RetryBackoff},
		{&c.MaxRetryBackoff, d.MaxRetryBackoff}, {&c.DegradedAfter, d.DegradedAfter}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	return c
}

// Worker validates raw events. Run it in as many replicas as needed; Config.Loops runs several
// loops in one process, sharing the group committers.
type Worker struct {
	js       jetstream.JetStream
	cons     []jetstream.Consumer // one handle per loop
	valid    *natsx.GroupCommit
	rejected *natsx.GroupCommit
	attempts jetstream.KeyValue
	schemas  schema.Source
	cfg      Config
	log      *slog.Logger
	metrics  Metrics
	backlog  backlog
	outs     outputs // the valid and rejected streams' dedup windows and recent ids
	rawEpoch int64   // the raw stream's creation time, so markers of a recreated stream differ
	instance string  // this worker's id in its in-flight keys
	// suspects are raw sequences an earlier validator was validating when it stopped uncleanly.
	suspectsMu sync.Mutex
	suspects   map[uint64]struct{}
}

// Metrics is told how the worker settles messages and how its outputs fare. An *obs.Validator;
// nil records nothing. One Worker per Metrics (Waiting reports the worker's whole backlog).
type Metrics interface {
	// Settled counts messages stored as valid, stored as rejected, and attempts that failed and
	// are being retried.
	Settled(valid, rejected, retry int)
	// OutputFailed counts one failed attempt on output ("valid", "rejected", "schemas",
	// "attempts", "lookup").
	OutputFailed(output string)
	// Waiting reports the messages held back by failing outputs, and since when the oldest of
	// them waits (zero when none).
	Waiting(retrying int, oldest time.Time)
}

// UseMetrics makes the worker report to m. Call it before Run.
func (w *Worker) UseMetrics(m Metrics) { w.metrics = m }

// New creates (or joins) the durable validator consumer on the raw stream.
func New(ctx context.Context, js jetstream.JetStream, reg schema.Source, cfg Config, log *slog.Logger) (*Worker, error) {
	cfg = cfg.withDefaults()
	w := &Worker{js: js, schemas: reg, cfg: cfg, log: log, instance: nuid.Next()}
	for i := 0; i < cfg.Loops; i++ {
		cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamRaw, jetstream.ConsumerConfig{
			Durable:       event.ConsumerValidator,
			Description:   "Logbook validator replicas",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxAckPending: 20 * cfg.BatchSize,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("failed to create consumer %s: %w", event.ConsumerValidator, err)
		}
		w.cons = append(w.cons, cons)
	}
	raw, err := js.Stream(ctx, event.StreamRaw)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", event.StreamRaw, err)
	}
	w.rawEpoch = raw.CachedInfo().Created.UnixNano()
	if w.attempts, err = js.KeyValue(ctx, event.BucketValidatorAttempts); err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketValidatorAttempts, err)
	}
	if err := w.outs.open(ctx, js); err != nil {
		return nil, err
	}
	if err := w.loadSuspects(ctx); err != nil {
		return nil, err
	}
	w.valid = natsx.NewGroupCommit(js.Conn(), js, event.StreamValid, natsx.DefaultGroupConfig())
	w.rejected = natsx.NewGroupCommit(js.Conn(), js, event.StreamRejected, natsx.DefaultGroupConfig())
	return w, nil
}

// Check reports a stalled republish (natsx.GroupCommit.Check of the valid and rejected
// committers), for readiness.
func (w *Worker) Check(ctx context.Context) error {
	return errors.Join(w.valid.Check(ctx), w.rejected.Check(ctx))
}

// Run validates until ctx is done. Each loop finishes the batch in hand first, unless its outputs
// fail: then it stops retrying and leaves the unsettled messages to be redelivered.
func (w *Worker) Run(ctx context.Context) error {
	defer w.valid.Close()
	defer w.rejected.Close()
	var wg sync.WaitGroup
	for i, cons := range w.cons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, i, cons)
		}()
	}
	wg.Wait()
	w.unmarkBatches()
	return nil
}

func (w *Worker) loop(ctx context.Context, id int, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		msgs, err := w.fetch(cons)
		if err != nil {
			w.log.Warn("fetch failed", "consumer", event.ConsumerValidator, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) > 0 {
			w.process(ctx, id, msgs)
		}
	}
}

// fetch waits up to FetchWait for one message, then up to FetchLinger for more, up to BatchSize:
// batches large enough to spread their fixed costs, without holding events long.
func (w *Worker) fetch(cons jetstream.Consumer) ([]jetstream.Msg, error) {
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(w.cfg.FetchWait))
	if err != nil {
		return nil, err
	}
	msgs, err := drain(first)
	if err != nil || len(msgs) == 0 || w.cfg.BatchSize == 1 {
		return msgs, err
	}
	rest, err := cons.Fetch(w.cfg.BatchSize-1, jetstream.FetchMaxWait(w.cfg.FetchLinger))
	if err != nil {
		return msgs, nil // the first message is processed now; the rest come next round
	}
	more, _ := drain(rest)
	return append(msgs, more...), nil
}

func drain(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
		return nil, err
	}
	return msgs, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
