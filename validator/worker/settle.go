package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/failpoint"
)

// item is one raw message in hand, from fetch until settled.
type item struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	d    decision
	// mayExist: an earlier attempt may have stored d.out already (a previous delivery, or a
	// publish of this one whose outcome is unknown).
	mayExist bool
	// marked: an isolation marker of this message is set and not yet cleared (isolate.go).
	marked bool
	// crashed: dead-lettered because the process died validating it alone.
	crashed bool
	done    atomic.Bool
}

func newItem(m jetstream.Msg) *item {
	meta, err := m.Metadata()
	if err != nil { // not a JetStream message: treat it as new
		meta = &jetstream.MsgMetadata{NumDelivered: 1, Timestamp: time.Now()}
	}
	return &item{msg: m, meta: meta, mayExist: meta.NumDelivered > 1}
}

// process settles a fetched batch: the messages delivered for the first time together, then each
// suspect (delivered again, or left in flight by a validator that died) alone, under an isolation
// marker. Every message is kept in progress from fetch until it is settled.
func (w *Worker) process(ctx context.Context, loop int, msgs []jetstream.Msg) {
	items := make([]*item, len(msgs))
	var fresh, again []*item
	for i, m := range msgs {
		items[i] = newItem(m)
		if w.suspect(items[i]) {
			items[i].mayExist = true
			again = append(again, items[i])
		} else {
			fresh = append(fresh, items[i])
		}
	}
	stop := keepInProgress(items, w.cfg.AckWait/3)
	defer stop()
	settled := true
	if len(fresh) > 0 {
		marked := false
		settled = w.settle(ctx, fresh, func(ctx context.Context, it *item) decision {
			if !marked { // written before the first record of the batch is validated
				if err := w.markBatch(ctx, loop, fresh); err != nil {
					return decision{wait: markerError{err}}
				}
				marked = true
			}
			return w.decide(ctx, it.msg)
		})
	}
	for _, it := range again {
		if !settled && ctx.Err() != nil {
			return // shutting down while outputs fail: the rest is redelivered
		}
		settled = w.settle(ctx, []*item{it}, w.decideAlone)
		if settled {
			w.cleared(it)
			if it.crashed {
				w.forgetAttempts(it)
			}
		}
	}
}

// settle decides and publishes items and acknowledges each raw message once its republish is
// stored. An output failure (a publish refused or unanswered, schemas unreachable) is retried with
// backoff for as long as it lasts; only the end of ctx stops it, leaving the unsettled messages to
// be redelivered. The first attempt runs even when ctx is already done (the batch in hand is
// finished on shutdown).
func (w *Worker) settle(ctx context.Context, items []*item, decide func(context.Context, *item) decision) (settled bool) {
	ep := &episode{}
	defer w.backlog.update(w.metrics, ep, 0)
	backoff := w.cfg.RetryBackoff
	for {
		err := w.attempt(items, decide)
		left := 0
		for _, it := range items {
			if !it.done.Load() {
				left++
			}
		}
		if left == 0 {
			return true
		}
		if ep.since.IsZero() {
			ep.since = time.Now()
		}
		w.backlog.failed(err)
		w.backlog.update(w.metrics, ep, left)
		if ctx.Err() == nil {
			w.log.Warn("output failing; retrying", "messages", left, "waiting", time.Since(ep.since).Round(time.Millisecond),
				"retry_in", backoff, "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, w.cfg.MaxRetryBackoff)
		}
		if ctx.Err() != nil {
			w.log.Warn("stopping with messages unsettled; they will be redelivered", "messages", left, "err", err)
			return false
		}
	}
}

// lookupTimeout bounds a schema lookup or an isolation marker operation; publishTimeout one round
// of publishes.
const (
	lookupTimeout  = 10 * time.Second
	publishTimeout = 30 * time.Second
)

// attempt makes one round over the items not yet settled: decide those still undecided, publish the
// decided ones, and acknowledge what was stored. It returns the last failure.
func (w *Worker) attempt(items []*item, decide func(context.Context, *item) decision) (last error) {
	var valid, rejected []*item
	nValid, nRejected, nFailed := 0, 0, 0
	for _, it := range items {
		if it.done.Load() {
			continue
		}
		if it.d.out == nil {
			ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
			d := decide(ctx, it)
			cancel()
			if d.out == nil {
				last = d.wait
				nFailed++
				w.failed(d.waitOn())
				continue
			}
			it.d = d
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		stored, err := w.outs.stored(ctx, w.js, it)
		cancel()
		switch {
		case err != nil:
			last = fmt.Errorf("failed to look for an earlier copy of %s: %w", it.d.out.Header.Get(jetstream.MsgIDHeader), err)
			nFailed++
			w.failed("lookup")
		case stored:
			w.ack(it)
			if it.d.valid {
				nValid++
			} else {
				nRejected++
			}
		case it.d.valid:
			valid = append(valid, it)
		default:
			rejected = append(rejected, it)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	var rejErrs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		rejErrs = publishAll(ctx, w.rejected, rejected)
	}()
	validErrs := publishAll(ctx, w.valid, valid)
	<-done
	failpoint.Inject("validator-after-publish") // republished, raw messages not yet acked
	settle := func(its []*item, errs []error, output string) (stored int) {
		for i, it := range its {
			if err := errs[i]; err != nil {
				if ambiguous(err) {
					it.mayExist = true
				}
				last = fmt.Errorf("failed to publish %s to %s: %w", it.d.out.Header.Get(jetstream.MsgIDHeader), output, err)
				nFailed++
				w.failed(output)
				continue
			}
			w.outs.remember(it.d.out.Header.Get(jetstream.MsgIDHeader))
			w.ack(it)
			stored++
		}
		return stored
	}
	nValid += settle(valid, validErrs, "valid")
	nRejected += settle(rejected, rejErrs, "rejected")
	if w.metrics != nil {
		w.metrics.Settled(nValid, nRejected, nFailed)
	}
	return last
}

func publishAll(ctx context.Context, g interface {
	PublishAll(context.Context, []*nats.Msg) []error
}, items []*item) []error {
	if len(items) == 0 {
		return nil
	}
	out := make([]*nats.Msg, len(items))
	for i, it := range items {
		out[i] = it.d.out
	}
	return g.PublishAll(ctx, out)
}

func (w *Worker) ack(it *item) {
	it.done.Store(true)
	if err := it.msg.Ack(); err != nil {
		w.log.Warn("ack failed (the message will be redelivered and found stored)", "err", err)
	}
}

func (w *Worker) failed(output string) {
	if w.metrics != nil {
		w.metrics.OutputFailed(output)
	}
}

// waitOn names the output a waiting decision waits for.
func (d decision) waitOn() string {
	var m markerError
	if errors.As(d.wait, &m) {
		return "attempts"
	}
	return "schemas"
}

// ambiguous reports whether a failed publish may nevertheless have been stored: anything but a
// refusal JetStream answered (a timeout, a lost connection) leaves it open.
func ambiguous(err error) bool {
	var apiErr *jetstream.APIError
	return !errors.As(err, &apiErr)
}

// keepInProgress tells JetStream every interval that the items not yet settled are still being
// worked on, so AckWait never expires while this process holds them, until stop is called.
func keepInProgress(items []*item, interval time.Duration) (stop func()) {
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
				for _, it := range items {
					if !it.done.Load() {
						_ = it.msg.InProgress()
					}
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
