// Package settle tells when the pipeline has stored what the gateway acknowledged: the
// read-your-writes point of exports and single-event reads.
//
// Every event the gateway acknowledged sits in the raw stream. A Point taken now is the raw
// stream's last sequence S. It is settled in two steps, each read from the durable consumers'
// ack floors (the stream sequence up to which every message has been acknowledged):
//
//  1. the validator consumer's ack floor reaches S: every raw event up to S has been published to
//     the valid or the rejected stream (the validator acknowledges a raw message only after that
//     publish). The valid stream's last sequence V at that moment is recorded in the Point;
//  2. the writer consumer's ack floor reaches V: every valid event up to V is in ClickHouse (the
//     writer acknowledges only after its INSERT succeeded).
//
// Only sequences are compared, never message ids; deleting settled messages from the streams (a
// trimmer) moves the floors forward, never back.
package settle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// Point is a position in the pipeline: the raw stream up to Raw, and, once the validator settled
// that, the valid stream up to Valid. It is JSON so a job can keep it: a replica resuming the job
// waits for the same point.
type Point struct {
	Raw uint64 `json:"raw_seq"`
	// Valid is set (ValidSet true) when step 1 is done.
	Valid    uint64 `json:"valid_seq"`
	ValidSet bool   `json:"valid_set"`
}

// Waiter reads the streams and consumers through JetStream. Safe for concurrent use.
type Waiter struct {
	js   jetstream.JetStream
	poll time.Duration
}

// New returns a Waiter that polls the consumers every 100 ms while it waits.
func New(js jetstream.JetStream) *Waiter { return &Waiter{js: js, poll: 100 * time.Millisecond} }

// Mark returns the Point of now: everything acknowledged so far.
func (w *Waiter) Mark(ctx context.Context) (Point, error) {
	seq, err := w.lastSeq(ctx, event.StreamRaw)
	if err != nil {
		return Point{}, err
	}
	return Point{Raw: seq}, nil
}

// Step moves p forward as far as the pipeline has settled it and reports whether p is stored.
func (w *Waiter) Step(ctx context.Context, p *Point) (bool, error) {
	if !p.ValidSet {
		ok, err := w.settled(ctx, event.StreamRaw, event.ConsumerValidator, p.Raw)
		if err != nil || !ok {
			return false, err
		}
		v, err := w.lastSeq(ctx, event.StreamValid)
		if err != nil {
			return false, err
		}
		p.Valid, p.ValidSet = v, true
	}
	return w.settled(ctx, event.StreamValid, event.ConsumerWriter, p.Valid)
}

// Wait returns once p is stored, or ctx's error. progress, when not nil, is called with p each
// time it moves (so a caller can record it).
func (w *Waiter) Wait(ctx context.Context, p *Point, progress func(Point)) error {
	for {
		before := *p
		done, err := w.Step(ctx, p)
		if err == nil && *p != before && progress != nil {
			progress(*p)
		}
		if err == nil && done {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return ctx.Err()
		case <-time.After(w.poll):
		}
	}
}

// WaitNow waits until everything acknowledged before the call is stored, or ctx ends.
func (w *Waiter) WaitNow(ctx context.Context) error {
	p, err := w.Mark(ctx)
	if err != nil {
		return err
	}
	return w.Wait(ctx, &p, nil)
}

func (w *Waiter) lastSeq(ctx context.Context, stream string) (uint64, error) {
	s, err := w.js.Stream(ctx, stream) // one request: it reads the stream's info
	if err != nil {
		return 0, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// settled reports whether consumer of stream has acknowledged every message up to seq. A
// consumer that does not exist yet has settled only seq 0.
func (w *Waiter) settled(ctx context.Context, stream, consumer string, seq uint64) (bool, error) {
	if seq == 0 {
		return true, nil
	}
	c, err := w.js.Consumer(ctx, stream, consumer) // one request: it reads the consumer's info
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to read consumer %s: %w", consumer, err)
	}
	return c.CachedInfo().AckFloor.Stream >= seq, nil
}
