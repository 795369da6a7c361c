package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Progress is how far the durable consumers of one stream have settled it, as JetStream reports.
type Progress struct {
	Stream string
	// First and Last are the stream's first and last sequences, read before its consumers.
	First, Last uint64
	// FirstTime is when the first message was stored.
	FirstTime time.Time
	// Now is the server's clock when the stream was read.
	Now time.Time
	// Keep is the stream's keep time (KeepMetadata); 0 when it has none and is never trimmed.
	Keep time.Duration
	// Purgeable says the stream allows purges (a raw or valid stream made by an older Logbook
	// denies them).
	Purgeable bool
	// Consumers are the stream's durable consumers; ephemeral and ordered ones (readers such as
	// reconciliation) settle nothing and are left out.
	Consumers []ConsumerProgress
}

// ConsumerProgress is one durable consumer's part of a Progress.
type ConsumerProgress struct {
	Name string
	// Settled is a sequence at or below which every message the consumer takes is settled
	// (acknowledged or terminated). A consumer with nothing pending and nothing awaiting its
	// acknowledgement has settled the whole stream as read (Progress.Last); a filtered consumer
	// ignores the messages outside its filter.
	Settled uint64
	// Oldest is when its oldest unsettled message was stored; zero when it has none.
	Oldest time.Time
}

// Settled returns the sequence at or below which every durable consumer has settled every
// message, and false when the stream has no durable consumer (then nothing is known settled).
func (p Progress) Settled() (uint64, bool) {
	if len(p.Consumers) == 0 {
		return 0, false
	}
	floor := p.Consumers[0].Settled
	for _, c := range p.Consumers[1:] {
		floor = min(floor, c.Settled)
	}
	return floor, true
}

// Oldest returns when the oldest message some durable consumer has not settled was stored; zero
// when every consumer is settled.
func (p Progress) Oldest() time.Time {
	var oldest time.Time
	for _, c := range p.Consumers {
		if !c.Oldest.IsZero() && (oldest.IsZero() || c.Oldest.Before(oldest)) {
			oldest = c.Oldest
		}
	}
	return oldest
}

// ReadProgress reads stream's state and then each durable consumer's: in this order, so a message
// stored in between can only make a consumer look less settled, never more.
func ReadProgress(ctx context.Context, js jetstream.JetStream, stream string) (Progress, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return Progress{}, fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return Progress{}, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	p := Progress{
		Stream: stream, First: info.State.FirstSeq, Last: info.State.LastSeq, FirstTime: info.State.FirstTime,
		Now: info.TimeStamp, Purgeable: !info.Config.DenyPurge,
	}
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	if keep, err := time.ParseDuration(info.Config.Metadata[KeepMetadata]); err == nil && keep > 0 {
		p.Keep = keep
	}
	list := s.ListConsumers(ctx)
	for ci := range list.Info() {
		if ci.Config.Durable == "" {
			continue
		}
		c := ConsumerProgress{Name: ci.Name, Settled: ci.AckFloor.Stream}
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			c.Settled = max(c.Settled, p.Last)
		} else if c.Oldest, err = firstAfter(ctx, s, ci.AckFloor.Stream, filters(ci.Config)); err != nil {
			return Progress{}, fmt.Errorf("failed to read consumer %s of %s: %w", ci.Name, stream, err)
		}
		p.Consumers = append(p.Consumers, c)
	}
	if err := list.Err(); err != nil {
		return Progress{}, fmt.Errorf("failed to list the consumers of %s: %w", stream, err)
	}
	return p, nil
}

func filters(c jetstream.ConsumerConfig) []string {
	switch {
	case len(c.FilterSubjects) > 0:
		return c.FilterSubjects
	case c.FilterSubject != "":
		return []string{c.FilterSubject}
	}
	return []string{">"}
}

// firstAfter returns when the first message after seq matching one of subjects was stored, or
// zero when there is none.
func firstAfter(ctx context.Context, s jetstream.Stream, seq uint64, subjects []string) (time.Time, error) {
	var first time.Time
	for _, subj := range subjects {
		m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return time.Time{}, err
		}
		if first.IsZero() || m.Time.Before(first) {
			first = m.Time
		}
	}
	return first, nil
}

// Trimmer removes from a stream what every durable consumer has settled and what is older than the
// stream's keep time (KeepMetadata), with one sequence-bounded purge per stream and round:
// everything below min(settled+1, first sequence younger than the keep time). A message some
// durable consumer has not settled is never removed, however old; a stream without a durable
// consumer or without a keep time is left alone. Several trimmers on the same streams (one per
// service replica) are harmless: they purge the same prefix.
//
// A consumer with nothing pending counts as settled through the stream's last sequence as read
// before its info. In a cluster a consumer's leader may report from a replica a few milliseconds
// behind the stream leader; the keep time (hours, never under the duplicate window) covers that,
// since only messages older than it are removed.
type Trimmer struct {
	js      jetstream.JetStream
	streams []string
	log     *slog.Logger
	mu      sync.Mutex
	warned  map[string]bool
}

// NewTrimmer returns a Trimmer of streams (event.StreamRaw, event.StreamValid).
func NewTrimmer(js jetstream.JetStream, log *slog.Logger, streams ...string) *Trimmer {
	return &Trimmer{js: js, streams: streams, log: log, warned: map[string]bool{}}
}

// TrimInterval is how often Run trims streams kept for keep: a few times per keep time, at most
// once a minute and at least every 100 ms.
func TrimInterval(keep time.Duration) time.Duration {
	return min(time.Minute, max(keep/4, 100*time.Millisecond))
}

// Run trims every TrimInterval of the shortest keep time until ctx ends. Failures are logged and
// retried at the next round.
func (t *Trimmer) Run(ctx context.Context) {
	every := time.Minute
	for {
		if shortest, err := t.Trim(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			t.log.Warn("trimming streams failed", "err", err)
		} else if shortest > 0 {
			every = TrimInterval(shortest)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// Trim trims each stream once and returns the shortest keep time among them (0 if none has one).
func (t *Trimmer) Trim(ctx context.Context) (time.Duration, error) {
	var errs []error
	var shortest time.Duration
	for _, stream := range t.streams {
		keep, err := t.trim(ctx, stream)
		if err != nil {
			errs = append(errs, err)
		}
		if keep > 0 && (shortest == 0 || keep < shortest) {
			shortest = keep
		}
	}
	return shortest, errors.Join(errs...)
}

func (t *Trimmer) trim(ctx context.Context, stream string) (time.Duration, error) {
	p, err := ReadProgress(ctx, t.js, stream)
	if err != nil {
		return 0, err
	}
	settled, ok := p.Settled()
	if p.Keep == 0 || !ok || p.Last < p.First || p.Now.Sub(p.FirstTime) < p.Keep {
		return p.Keep, nil // not trimmed, nothing known settled, empty, or nothing old enough
	}
	upTo := min(settled, p.Last) + 1
	young, found, err := firstStoredSince(ctx, t.js, stream, p.Now.Add(-p.Keep))
	if err != nil {
		return p.Keep, err
	}
	if found {
		upTo = min(upTo, young)
	}
	if upTo <= p.First {
		return p.Keep, nil
	}
	if !p.Purgeable {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.warned[stream] {
			t.warned[stream] = true
			t.log.Warn("stream denies purges (created by an older Logbook): settled events are kept until the "+
				"stream is full; recreate it when drained (docs/design.md, Streams)", "stream", stream, "settled_up_to", upTo-1)
		}
		return p.Keep, nil
	}
	s, err := t.js.Stream(ctx, stream)
	if err != nil {
		return p.Keep, fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(upTo)); err != nil {
		return p.Keep, fmt.Errorf("failed to trim stream %s below %d: %w", stream, upTo, err)
	}
	t.log.Debug("trimmed stream", "stream", stream, "below", upTo, "settled", settled)
	return p.Keep, nil
}

// firstStoredSince returns the sequence of the first message of stream stored at or after since,
// and false when there is none (every message is older). The JetStream client has no call for a
// message get by start time, so this is the API request itself.
func firstStoredSince(ctx context.Context, js jetstream.JetStream, stream string, since time.Time) (uint64, bool, error) {
	req, err := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
		NoHeaders bool      `json:"no_hdr"`
	}{since.UTC(), true})
	if err != nil {
		return 0, false, err
	}
	resp, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return 0, false, fmt.Errorf("failed to find the first message of %s since %s: %w", stream, since, err)
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, false, fmt.Errorf("failed to read the first message of %s since %s: %w", stream, since, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, false, nil
	case r.Error != nil:
		return 0, false, fmt.Errorf("failed to find the first message of %s since %s: %w", stream, since, r.Error)
	case r.Message == nil:
		return 0, false, fmt.Errorf("no message in the answer for %s since %s", stream, since)
	}
	return r.Message.Seq, true, nil
}
