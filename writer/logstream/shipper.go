package logstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/writer/logstream/destination"
)

// reader reads stored events in received order (catch-up from ClickHouse): a *store.Store.
type reader interface {
	ReceivedPage(ctx context.Context, f store.Received, limit int) ([]store.Event, error)
}

// errInterrupted stops a delivery whose stream changed (paused, reconfigured, replayed, deleted)
// or must be released; the batch is handed back to JetStream in order.
var errInterrupted = errors.New("delivery interrupted")

// shipper delivers one stream. It runs in one goroutine (run); update and replayRequested may be
// called from others.
type shipper struct {
	js     jetstream.JetStream
	st     *logstream.Store
	db     reader
	cfg    Config
	log    *slog.Logger
	client *http.Client
	now    func() time.Time

	rec     atomic.Pointer[logstream.Record] // the latest configuration
	changed chan struct{}                    // a signal: rec changed or a replay was requested

	// Owned by run.
	cur    *logstream.Record // the configuration the sender was built from
	sender destination.Sender
	status logstream.Status
	saved  time.Time // when status was last stored
	cons   jetstream.Consumer
	dirty  bool // status changed since it was stored
	// lastReleaseCheck is when the release conditions were last read.
	lastReleaseCheck time.Time
}

func newShipper(js jetstream.JetStream, st *logstream.Store, db reader, cfg Config, client *http.Client, rec *logstream.Record, log *slog.Logger) *shipper {
	s := &shipper{js: js, st: st, db: db, cfg: cfg, client: client, log: log.With("log_stream", rec.ID),
		now: time.Now, changed: make(chan struct{}, 1)}
	s.rec.Store(rec)
	return s
}

// update hands the shipper a new configuration.
func (s *shipper) update(rec *logstream.Record) {
	s.rec.Store(rec)
	s.poke()
}

func (s *shipper) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// run delivers until ctx ends (the lease was lost, the stream deleted, the process stopping).
func (s *shipper) run(ctx context.Context) {
	st, _, err := s.st.Status(ctx, s.rec.Load().ID)
	for err != nil && ctx.Err() == nil {
		s.log.Warn("failed to read log stream status", "err", err)
		sleep(ctx, time.Second)
		st, _, err = s.st.Status(ctx, s.rec.Load().ID)
	}
	s.status = st
	if s.status.Mode == "" {
		s.status.Mode, s.status.Health = logstream.ModeLive, logstream.HealthOK
	}
	// A consumer left with messages in flight by an earlier holder is reset to its ack floor, so
	// redeliveries cannot overtake newer messages: delivery stays in order.
	if s.status.Mode == logstream.ModeLive && s.status.Consumer != "" {
		if _, err := s.js.ResetConsumer(ctx, event.StreamValid, s.status.Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.log.Warn("failed to reset consumer to its ack floor", "consumer", s.status.Consumer, "err", err)
		}
	}
	for ctx.Err() == nil {
		if err := s.step(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("log stream step failed", "err", err)
			sleep(ctx, time.Second)
		}
		if s.dirty {
			s.saveStatus(ctx, false)
		}
	}
	s.saveStatus(context.WithoutCancel(ctx), true)
}

// step does one unit of work: take up a replay, rebuild the sender, deliver a batch, or wait.
func (s *shipper) step(ctx context.Context) error {
	rec := s.rec.Load()
	if s.cur != rec {
		sender, err := s.newSender(rec)
		if err != nil {
			s.fail(err)
			s.saveStatus(ctx, true)
			sleep(ctx, s.cfg.RetryMax)
			return nil
		}
		s.cur, s.sender = rec, sender
		s.cons = nil
	}
	if err := s.takeReplay(ctx); err != nil {
		return err
	}
	if paused := rec.State == logstream.StatePaused; paused != s.status.Paused {
		s.status.Paused = paused
		s.saveStatus(ctx, true)
	}
	if s.status.Mode == logstream.ModeCatchUp {
		if rec.State == logstream.StatePaused {
			s.wait(ctx, 5*time.Second)
			return nil
		}
		return s.catchUp(ctx)
	}
	if released, err := s.maybeRelease(ctx, false); released || err != nil {
		return err
	}
	if rec.State == logstream.StatePaused {
		s.wait(ctx, 5*time.Second)
		return nil
	}
	return s.live(ctx)
}

func (s *shipper) newSender(rec *logstream.Record) (destination.Sender, error) {
	sec, err := s.st.Open(rec)
	if err != nil {
		return nil, err
	}
	return destination.New(rec.Destination, *sec, s.client)
}

// wait sleeps for d or until the stream changes.
func (s *shipper) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-s.changed:
	case <-t.C:
	}
}

// consumer returns the live consumer, creating it when the status names none (a stream whose
// consumer an operator deleted resumes from its last delivered event's received time, through
// ClickHouse).
func (s *shipper) consumer(ctx context.Context) (jetstream.Consumer, error) {
	if s.cons != nil {
		return s.cons, nil
	}
	c, err := s.js.Consumer(ctx, event.StreamValid, s.status.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		from := s.now()
		if s.status.LastEventReceivedAt != nil {
			from = *s.status.LastEventReceivedAt
		}
		s.log.Warn("log stream consumer missing: catching up from the last delivered event", "consumer", s.status.Consumer, "from", from)
		s.startCatchUp(from, "")
		s.saveStatus(ctx, true)
		return nil, errInterrupted
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open consumer %s: %w", s.status.Consumer, err)
	}
	// Batch settings may have changed: MaxAckPending follows the batch size.
	want := s.cur.Batch.WithDefaults(s.cur.Destination.Type).MaxEvents
	if info := c.CachedInfo(); info != nil && info.Config.MaxAckPending != want {
		cfg := info.Config
		cfg.MaxAckPending = want
		if c2, err := s.js.UpdateConsumer(ctx, event.StreamValid, cfg); err == nil {
			c = c2
		} else {
			s.log.Warn("failed to resize consumer", "consumer", s.status.Consumer, "err", err)
		}
	}
	s.cons = c
	return c, nil
}

// live delivers one batch from the consumer.
func (s *shipper) live(ctx context.Context) error {
	c, err := s.consumer(ctx)
	if errors.Is(err, errInterrupted) {
		return nil
	}
	if err != nil {
		return err
	}
	msgs, events, err := s.collect(ctx, c)
	if err != nil || len(msgs) == 0 {
		return err
	}
	keepAlive := func() {
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
	if err := s.deliver(ctx, events, keepAlive); err != nil {
		// Hand the batch back in order; JetStream redelivers it before anything newer.
		for _, m := range msgs {
			_ = m.Nak()
		}
		if errors.Is(err, errRelease) {
			_, err = s.maybeRelease(ctx, true)
			return err
		}
		return nil
	}
	for _, m := range msgs[:len(msgs)-1] {
		_ = m.Ack()
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
		// Delivered but not acknowledged: the batch comes again (at least once).
		s.log.Warn("failed to acknowledge a delivered batch", "err", err)
	}
	return nil
}

// collect fetches up to one batch: it waits up to a second for a first message, then gathers more
// until the batch is full (events or bytes) or its linger has passed.
func (s *shipper) collect(ctx context.Context, c jetstream.Consumer) ([]jetstream.Msg, []store.Event, error) {
	b := s.cur.Batch.WithDefaults(s.cur.Destination.Type)
	var msgs []jetstream.Msg
	var events []store.Event
	size := 0
	var deadline time.Time
	for ctx.Err() == nil && len(msgs) < b.MaxEvents && size < b.MaxBytes {
		n, wait := 1, time.Second
		if len(msgs) > 0 {
			n, wait = b.MaxEvents-len(msgs), time.Until(deadline)
			if wait < time.Millisecond {
				break
			}
		}
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(wait))
		if err != nil {
			if len(msgs) > 0 {
				break
			}
			return nil, nil, fmt.Errorf("failed to fetch from %s: %w", s.status.Consumer, err)
		}
		for m := range batch.Messages() {
			rec, err := event.Unmarshal(m.Data())
			var e store.Event
			if err == nil {
				e, err = store.EventOf(rec)
			}
			if err != nil {
				// The validator never passes such a record on; it cannot be streamed.
				s.log.Error("undecodable record in the valid stream skipped", "subject", m.Subject(), "err", err)
				_ = m.Term()
				continue
			}
			if len(msgs) == 0 {
				deadline = time.Now().Add(b.Linger())
			}
			msgs = append(msgs, m)
			events = append(events, e)
			size += len(e.Object())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
			return nil, nil, fmt.Errorf("fetch from %s ended: %w", s.status.Consumer, err)
		}
		if len(msgs) == 0 {
			return nil, nil, nil // idle: the caller looks at the stream's state again
		}
	}
	return msgs, events, nil
}

// errRelease interrupts a delivery whose stream must let go of the valid stream.
var errRelease = errors.New("log stream must be released")

// deliver sends events in pieces the destination takes (events and bytes), each retried until it
// is accepted; it returns an error only when interrupted.
func (s *shipper) deliver(ctx context.Context, events []store.Event, keepAlive func()) error {
	b := s.cur.Batch.WithDefaults(s.cur.Destination.Type)
	maxEvents := b.MaxEvents
	if m := destination.MaxEvents(s.cur.Destination.Type); m > 0 && m < maxEvents {
		maxEvents = m
	}
	for len(events) > 0 {
		n, size := 0, 0
		for n < len(events) && n < maxEvents && (n == 0 || size+len(events[n].Object()) <= b.MaxBytes) {
			size += len(events[n].Object())
			n++
		}
		if err := s.send(ctx, events[:n], keepAlive); err != nil {
			return err
		}
		events = events[n:]
	}
	return nil
}

// send delivers one piece, retrying with backoff until it is accepted or the delivery is
// interrupted. A piece the destination finds too large is split in halves.
func (s *shipper) send(ctx context.Context, events []store.Event, keepAlive func()) error {
	b := &destination.Batch{StreamID: s.cur.ID, Events: events}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		err := s.sender.Send(actx, b)
		cancel()
		if err == nil {
			s.succeeded(events)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var de *destination.Error
		if errors.As(err, &de) && de.TooLarge && len(events) > 1 {
			half := len(events) / 2
			if err := s.send(ctx, events[:half], keepAlive); err != nil {
				return err
			}
			return s.send(ctx, events[half:], keepAlive)
		}
		s.fail(err)
		s.saveStatus(ctx, false)
		wait := s.backoff(attempt)
		if de != nil && de.RetryAfter > 0 {
			wait = de.RetryAfter
		}
		s.log.Warn("log stream delivery failed; retrying", "err", err, "attempt", attempt+1, "wait", wait, "batch_size", len(events))
		if err := s.pause(ctx, wait, keepAlive); err != nil {
			return err
		}
	}
}

// backoff is the wait before retry attempt+1: exponential from RetryInitial to RetryMax, drawn
// from the upper half of the interval (jitter spreads the retries of many streams).
func (s *shipper) backoff(attempt int) time.Duration {
	d := s.cfg.RetryInitial
	for i := 0; i < attempt && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// pause waits d between attempts, keeping the batch's messages from redelivery, and returns
// errInterrupted when the stream changed and errRelease when it must be released.
func (s *shipper) pause(ctx context.Context, d time.Duration, keepAlive func()) error {
	deadline := time.Now().Add(d)
	for {
		if keepAlive != nil {
			keepAlive()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(min(left, logstream.AckWait/3))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.changed:
			t.Stop()
			s.poke()
			if rec := s.rec.Load(); rec != s.cur {
				return errInterrupted
			}
			if r, _, err := s.st.PendingReplay(ctx, s.cur.ID); err == nil && r != nil {
				return errInterrupted
			}
			// A spurious signal (the status of this very stream): drain it and go on.
			select {
			case <-s.changed:
			default:
			}
		case <-t.C:
		}
		if keepAlive != nil && s.status.Mode == logstream.ModeLive && s.now().Sub(s.lastReleaseCheck) >= s.releaseCheckEvery() {
			s.lastReleaseCheck = s.now()
			if must, err := s.mustRelease(ctx); err == nil && must {
				return errRelease
			}
		}
	}
}

// succeeded records a delivered piece.
func (s *shipper) succeeded(events []store.Event) {
	now := s.now().UTC()
	last := events[len(events)-1]
	s.status.Delivered += uint64(len(events))
	s.status.LastDeliveredAt = &now
	s.status.LastEventID = last.ID
	t := last.ReceivedAt
	s.status.LastEventReceivedAt = &t
	changed := s.status.Health != logstream.HealthOK
	s.status.Health, s.status.FailingSince = logstream.HealthOK, nil
	s.saveStatus(context.Background(), changed)
}

// fail records a failed attempt; the stream turns failing after FailingAfter of failures.
func (s *shipper) fail(err error) {
	now := s.now().UTC()
	s.status.FailedAttempts++
	s.status.LastError, s.status.LastErrorAt = err.Error(), &now
	if s.status.FailingSince == nil {
		s.status.FailingSince = &now
	}
	if now.Sub(*s.status.FailingSince) >= s.cfg.FailingAfter {
		s.status.Health = logstream.HealthFailing
	} else if s.status.Health != logstream.HealthFailing {
		s.status.Health = logstream.HealthRetrying
	}
}

// saveStatus stores the status: at once when force, else at most once a second.
func (s *shipper) saveStatus(ctx context.Context, force bool) {
	now := s.now()
	if !force && now.Sub(s.saved) < time.Second {
		s.dirty = true // stored by a later call (run saves a dirty status after every step)
		return
	}
	s.status.UpdatedAt = now.UTC()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.st.PutStatus(sctx, s.cur0().ID, s.status, 0); err != nil {
		s.log.Warn("failed to store log stream status", "err", err)
		return
	}
	s.saved, s.dirty = now, false
}

func (s *shipper) cur0() *logstream.Record {
	if s.cur != nil {
		return s.cur
	}
	return s.rec.Load()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
