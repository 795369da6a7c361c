package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// The valid and rejected streams drop a republished message whose id they stored within their
// duplicate window (LOGBOOK_STREAM_DUPLICATES, 10 minutes by default). Every copy of a record's
// republish is made after the raw message was stored, so while the raw message is younger than the
// window (less a margin for clocks), republishing is safe whatever happened before. An older raw
// message is republished only when no earlier attempt can have stored it: when it is delivered for
// the first time and this process never had an unclear answer for it. Otherwise the worker looks
// for the earlier copy first: in the ids it published or saw lately (held in memory, and, when the
// outputs have been quiet for longer than their window at start-up, loaded from their last minute,
// which covers a crash that also lost the consumer's latest delivery records), then by scanning the
// record's organization's subject on both output streams from the raw message's time.

// recentCap bounds the remembered ids (about 5 MB).
const recentCap = 1 << 16

// tailSpan is how much of an output stream's end is loaded at start when its window has passed.
const tailSpan = time.Minute

// outputs knows the output streams' duplicate windows and remembers recently stored ids. Safe for
// concurrent use.
type outputs struct {
	window time.Duration // the smaller of the two streams' duplicate windows
	mu     sync.Mutex
	recent map[string]struct{}
	ring   []string
	next   int
}

func (o *outputs) open(ctx context.Context, js jetstream.JetStream) error {
	o.recent = make(map[string]struct{})
	o.ring = make([]string, recentCap)
	for _, name := range []string{event.StreamValid, event.StreamRejected} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("failed to open stream %s: %w", name, err)
		}
		info := s.CachedInfo()
		if d := info.Config.Duplicates; o.window == 0 || d < o.window {
			o.window = d
		}
	}
	for _, name := range []string{event.StreamValid, event.StreamRejected} {
		s, _ := js.Stream(ctx, name)
		st := s.CachedInfo().State
		if st.Msgs == 0 || time.Since(st.LastTime) <= o.covered() {
			continue
		}
		if err := o.loadTail(ctx, js, name, st.LastTime.Add(-tailSpan), st.LastSeq); err != nil {
			return err
		}
	}
	return nil
}

// covered is how long after a raw message was stored its republishes are surely deduplicated.
func (o *outputs) covered() time.Duration {
	return o.window - min(o.window/4, time.Minute)
}

// remember records that id is stored on an output stream.
func (o *outputs) remember(id string) {
	if id == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.recent[id]; ok {
		return
	}
	if old := o.ring[o.next]; old != "" {
		delete(o.recent, old)
	}
	o.ring[o.next] = id
	o.next = (o.next + 1) % len(o.ring)
	o.recent[id] = struct{}{}
}

func (o *outputs) has(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.recent[id]
	return ok
}

// stored reports whether it's decided message is already on an output stream where the duplicate
// window would no longer catch a republish.
func (o *outputs) stored(ctx context.Context, js jetstream.JetStream, it *item) (bool, error) {
	id := it.d.out.Header.Get(jetstream.MsgIDHeader)
	if id == "" || time.Since(it.meta.Timestamp) <= o.covered() {
		return false, nil // the window covers every earlier copy
	}
	if o.has(id) {
		return true, nil
	}
	if !it.mayExist {
		return false, nil
	}
	org := event.OrgFromSubject(it.d.out.Subject)
	since := it.meta.Timestamp.Add(-time.Minute) // no copy predates the raw message (a minute for clocks)
	for _, s := range []struct{ stream, subject string }{
		{event.StreamValid, event.ValidSubject(org)}, {event.StreamRejected, event.RejectedSubject(org)},
	} {
		found, err := findMsgID(ctx, js, s.stream, s.subject, id, since)
		if err != nil {
			return false, err
		}
		if found {
			o.remember(id)
			return true, nil
		}
	}
	return false, nil
}

// loadTail remembers the ids of stream's messages stored from since up to sequence last.
func (o *outputs) loadTail(ctx context.Context, js jetstream.JetStream, stream string, since time.Time, last uint64) error {
	return scan(ctx, js, stream, "", since, last, func(h nats.Header) bool {
		o.remember(h.Get(jetstream.MsgIDHeader))
		return false
	})
}

// findMsgID reports whether subject of stream holds a message with id stored at or after since.
func findMsgID(ctx context.Context, js jetstream.JetStream, stream, subject, id string, since time.Time) (bool, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	lastMsg, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if lastMsg.Time.Before(since) {
		return false, nil
	}
	if lastMsg.Header.Get(jetstream.MsgIDHeader) == id {
		return true, nil
	}
	found := false
	err = scan(ctx, js, stream, subject, since, lastMsg.Sequence, func(h nats.Header) bool {
		found = h.Get(jetstream.MsgIDHeader) == id
		return found
	})
	return found, err
}

// scan reads the headers of stream's messages (on subject, or all when "") stored from since up to
// sequence last, oldest first, until fn returns true.
func scan(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, last uint64, fn func(nats.Header) bool) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since, HeadersOnly: true}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	oc, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	want := 1 // then exactly what is left, so no fetch waits for more
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := oc.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("failed to read stream %s: %w", stream, err)
		}
		n, pending := 0, uint64(0)
		for m := range b.Messages() {
			n++
			if fn(m.Headers()) {
				return nil
			}
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			if meta.Sequence.Stream >= last {
				return nil
			}
			pending = meta.NumPending
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("failed to read stream %s: %w", stream, err)
		}
		if n == 0 || pending == 0 {
			return nil
		}
		want = int(min(1000, pending))
	}
}
