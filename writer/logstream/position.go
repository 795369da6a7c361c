package logstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/store"
)

// A stream's position is either a durable consumer of the valid stream (live) or a received time
// to read ClickHouse from (catch-up). This file moves between the two: replays, releases and the
// hand-over back to a consumer.

// takeReplay acts on a pending replay request: the stream delivers again everything received at
// or after its time. When the valid stream still holds that time, a new consumer starts there;
// otherwise the stream catches up from ClickHouse first.
func (s *shipper) takeReplay(ctx context.Context) error {
	r, rev, err := s.st.PendingReplay(ctx, s.cur.ID)
	if err != nil || r == nil {
		return err
	}
	s.log.Info("replaying log stream", "from", r.From)
	s.startCatchUp(r.From, "")
	if err := s.handOver(ctx, r.From.Add(-s.cfg.ClockSkew)); err != nil {
		return err
	}
	s.saveStatus(ctx, true)
	return s.st.TakeReplay(ctx, s.cur.ID, rev)
}

// startCatchUp switches to catch-up from ClickHouse at (from, afterID), dropping the consumer.
func (s *shipper) startCatchUp(from time.Time, afterID string) {
	f := from.UTC()
	s.status.Mode, s.status.CatchUpFrom, s.status.CatchUpFromID = logstream.ModeCatchUp, &f, afterID
	s.status.Consumer, s.cons = "", nil
}

// handOver tries to go live from stream time start: it creates the next generation's consumer
// there, and keeps it (deleting every older one) if the valid stream still holds everything from
// start; otherwise it deletes it again and the stream stays in catch-up. The consumer is created
// before the check so that the trimmer cannot remove what it needs in between.
func (s *shipper) handOver(ctx context.Context, start time.Time) error {
	gen := s.status.Generation + 1
	name := logstream.ConsumerName(s.cur.ID, gen)
	_, err := s.js.CreateOrUpdateConsumer(ctx, event.StreamValid, logstream.ConsumerConfig(&s.cur.Stream, name, logstream.Start{Time: start}))
	if err != nil {
		return fmt.Errorf("failed to create consumer %s: %w", name, err)
	}
	info, err := s.streamInfo(ctx)
	if err != nil {
		return err
	}
	// The valid stream holds everything stored since start if it never lost a message, if its first
	// message is no younger than start, or if it is empty and nothing came after start.
	holds := info.State.FirstSeq <= 1 ||
		(info.State.Msgs > 0 && !info.State.FirstTime.After(start)) ||
		(info.State.Msgs == 0 && !info.State.LastTime.After(start))
	if !holds {
		if err := s.js.DeleteConsumer(ctx, event.StreamValid, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("failed to delete consumer %s: %w", name, err)
		}
		return nil
	}
	s.status.Generation, s.status.Consumer, s.status.Mode = gen, name, logstream.ModeLive
	s.status.CatchUpFrom, s.status.CatchUpFromID, s.status.Released = nil, "", false
	s.cons = nil
	s.saveStatus(ctx, true)
	if err := logstream.DeleteConsumers(ctx, s.js, s.cur.ID, name); err != nil {
		s.log.Warn("failed to delete older consumers", "err", err)
	}
	s.log.Info("log stream live", "consumer", name, "from", start)
	return nil
}

func (s *shipper) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	vs, err := s.js.Stream(ctx, event.StreamValid)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", event.StreamValid, err)
	}
	info, err := vs.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", event.StreamValid, err)
	}
	return info, nil
}

// catchUp delivers one page from ClickHouse, or hands over to a consumer once the page comes out
// short: every event received before the settled point is then delivered, and a consumer from
// that point (less the clock skew) takes every later one.
func (s *shipper) catchUp(ctx context.Context) error {
	until, err := s.settledPoint(ctx)
	if err != nil {
		return err
	}
	from := *s.status.CatchUpFrom
	if !until.After(from) {
		// Nothing stored beyond the position yet: go live from it.
		if err := s.handOver(ctx, from.Add(-s.cfg.ClockSkew)); err != nil {
			return err
		}
		if s.status.Mode == logstream.ModeCatchUp {
			s.wait(ctx, 5*time.Second)
		}
		return nil
	}
	b := s.cur.Batch.WithDefaults(s.cur.Destination.Type)
	f := store.Received{Org: s.cur.OrganizationID, From: from, AfterID: s.status.CatchUpFromID, Until: until}
	events, err := s.db.ReceivedPage(ctx, f, b.MaxEvents)
	if err != nil {
		return fmt.Errorf("failed to read events to catch up on: %w", err)
	}
	if len(events) == 0 {
		return s.handOver(ctx, until.Add(-s.cfg.ClockSkew))
	}
	if err := s.deliver(ctx, events, nil); err != nil {
		if errors.Is(err, errInterrupted) {
			return nil
		}
		return err
	}
	last := events[len(events)-1]
	t := last.ReceivedAt
	s.status.CatchUpFrom, s.status.CatchUpFromID = &t, last.ID
	s.saveStatus(ctx, false)
	if len(events) < b.MaxEvents {
		return s.handOver(ctx, until.Add(-s.cfg.ClockSkew))
	}
	return nil
}

// settledPoint returns a received time before which every accepted event is stored in ClickHouse:
// it notes the time and the raw stream's last sequence, waits (briefly) until the validator has
// settled that sequence and the writer everything the valid stream held then, and returns the noted
// time less the clock skew (a raw message is stored within seconds of its received time).
func (s *shipper) settledPoint(ctx context.Context) (time.Time, error) {
	noted := s.now()
	raw, err := s.js.Stream(ctx, event.StreamRaw)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to open stream %s: %w", event.StreamRaw, err)
	}
	ri, err := raw.Info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to read stream %s: %w", event.StreamRaw, err)
	}
	if err := s.waitSettled(ctx, event.StreamRaw, event.ConsumerValidator, ri.State.LastSeq); err != nil {
		return time.Time{}, err
	}
	vi, err := s.streamInfo(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if err := s.waitSettled(ctx, event.StreamValid, event.ConsumerWriter, vi.State.LastSeq); err != nil {
		return time.Time{}, err
	}
	return noted.Add(-s.cfg.ClockSkew), nil
}

// waitSettled waits up to 30 s until consumer has settled every message of stream up to seq.
func (s *shipper) waitSettled(ctx context.Context, stream, consumer string, seq uint64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := s.js.Consumer(ctx, stream, consumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil // no such stage (a test pipeline): nothing waits in it
		}
		if err != nil {
			return fmt.Errorf("failed to open consumer %s: %w", consumer, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("failed to read consumer %s: %w", consumer, err)
		}
		if info.AckFloor.Stream >= seq || (info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Stream >= seq) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has not settled %s up to %d yet: catch-up waits for the pipeline", consumer, stream, seq)
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// mustRelease says whether the live stream holds the valid stream back too long: its oldest
// undelivered event is older than HoldFor, or the valid stream is ReleaseFill full and the stream
// is at least ReleaseMinLag behind.
func (s *shipper) mustRelease(ctx context.Context) (bool, error) {
	if s.status.Consumer == "" {
		return false, nil
	}
	lag, err := logstream.ReadLag(ctx, s.js, &s.cur.Stream, s.status)
	if err != nil || lag.Oldest.IsZero() {
		return false, err
	}
	age := s.now().Sub(lag.Oldest)
	if age > s.cfg.HoldFor {
		return true, nil
	}
	if age < s.cfg.ReleaseMinLag {
		return false, nil
	}
	info, err := s.streamInfo(ctx)
	if err != nil {
		return false, err
	}
	return info.Config.MaxBytes > 0 && float64(info.State.Bytes) >= s.cfg.ReleaseFill*float64(info.Config.MaxBytes), nil
}

// maybeRelease releases the stream when it must (or when force): it records the received time of
// its oldest undelivered event as the catch-up position, then deletes its consumers, so the valid
// stream no longer keeps anything for it.
func (s *shipper) maybeRelease(ctx context.Context, force bool) (bool, error) {
	if s.status.Mode != logstream.ModeLive || s.status.Consumer == "" {
		return false, nil
	}
	if !force {
		if s.now().Sub(s.lastReleaseCheck) < s.releaseCheckEvery() {
			return false, nil
		}
		s.lastReleaseCheck = s.now()
		must, err := s.mustRelease(ctx)
		if err != nil || !must {
			return false, err
		}
	}
	from, err := s.oldestUndelivered(ctx)
	if err != nil {
		return false, err
	}
	if from.IsZero() {
		return false, nil
	}
	s.log.Warn("log stream released: its backlog is no longer held in the valid stream; it will catch up from ClickHouse",
		"consumer", s.status.Consumer, "from", from)
	s.startCatchUp(from, "")
	s.status.Released = true
	s.saveStatus(ctx, true)
	if err := logstream.DeleteConsumers(ctx, s.js, s.cur.ID, ""); err != nil {
		return true, err
	}
	return true, nil
}

// releaseCheckEvery is how often the release conditions are read: every 10 s, or twice per HoldFor
// when that is shorter.
func (s *shipper) releaseCheckEvery() time.Duration { return min(10*time.Second, s.cfg.HoldFor/2) }

// oldestUndelivered scans the consumer's undelivered messages (an ordered consumer from its ack
// floor) for the earliest received time among them: the valid stream's order is not received
// order, so the first undelivered message need not be the earliest received.
func (s *shipper) oldestUndelivered(ctx context.Context) (time.Time, error) {
	c, err := s.js.Consumer(ctx, event.StreamValid, s.status.Consumer)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to open consumer %s: %w", s.status.Consumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return time.Time{}, err
	}
	vi, err := s.streamInfo(ctx)
	if err != nil {
		return time.Time{}, err
	}
	last := vi.State.LastSeq
	if info.AckFloor.Stream >= last {
		return time.Time{}, nil
	}
	oc, err := s.js.OrderedConsumer(ctx, event.StreamValid, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.cur.Subject()}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: info.AckFloor.Stream + 1,
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to scan the backlog: %w", err)
	}
	var oldest time.Time
	for {
		batch, err := oc.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return time.Time{}, fmt.Errorf("failed to scan the backlog: %w", err)
		}
		n := 0
		var seq uint64
		for m := range batch.Messages() {
			n++
			var r struct {
				ReceivedAt time.Time `json:"received_at"`
			}
			if json.Unmarshal(m.Data(), &r) == nil && (oldest.IsZero() || r.ReceivedAt.Before(oldest)) {
				oldest = r.ReceivedAt
			}
			if md, err := m.Metadata(); err == nil {
				seq = md.Sequence.Stream
			}
		}
		if n == 0 || seq >= last {
			return oldest, nil
		}
	}
}
