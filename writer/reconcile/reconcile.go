// Package reconcile compares what JetStream accepted with what ClickHouse holds, per organization,
// and names every gap and duplicate: the check that nothing acknowledged was lost on the way.
//
// It works in windows of receive time (the time the gateway gave each event, carried unchanged
// through every stream and stored as received_at), one window at a time, so its memory is bounded
// by the events of one window, not by the history reconciled. For a window it reads each stream
// from the window's start (start-time ordered consumers) until a little past its end (or further,
// only while something of the window has not been found yet), and the ids ClickHouse stores with a
// receive time in the window, and compares them:
//
//   - accepted (the raw stream) but in neither the valid nor the rejected stream although the
//     validator settled it (its raw sequence is at or below the validator's ack floor): lost between
//     the validator and its output (unvalidated); past the floor: in flight;
//   - valid but not stored although the writer settled it: lost (missing); past the floor: in flight;
//   - rejected: by reason category, input side (the event itself: schema violation, undecodable,
//     refused by ClickHouse as data) or output side (dead-lettered because of a failure downstream
//     of the event, such as retries exhausted): an output-side rejection of an event never
//     redriven is a loss, reported as a failure; a rejected event that later became valid was
//     redriven;
//   - stored more than once (duplicated), stored but in no valid message (unknown), valid or
//     rejected but never accepted (unaccepted).
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
)

// MaxListed caps how many ids a report lists per organization and kind (the counts are exact).
const MaxListed = 100

// DefaultWindow is the receive-time window reconciled at a time: memory holds one window's events.
const DefaultWindow = time.Hour

// DefaultSlack is how far a stream message's time may lie from its event's receive time and still
// be read with the event's window without looking further: the publish delay of each hop, and the
// clock skew between the gateway and the NATS servers. Each window's streams are read from its
// start less the slack to its end plus the slack.
const DefaultSlack = time.Minute

// Org is one organization's reconciliation.
type Org struct {
	Organization string `json:"organization_id"`
	// Accepted is how many distinct events the raw stream holds (acknowledged by the gateway).
	Accepted int `json:"accepted"`
	Valid    int `json:"valid"`
	Rejected int `json:"rejected"`
	Stored   int `json:"stored"`
	// InFlight: acknowledged, not stored, and still with a stage of the pipeline (past the ack
	// floor of the validator or of the writer): not lost (yet). Pending is the same count, under
	// its earlier name.
	InFlight int `json:"in_flight"`
	Pending  int `json:"pending"`
	// Lost: acknowledged, settled by a stage, and in no later place: unvalidated + missing +
	// rejected on the output side without a redrive.
	Lost int `json:"lost"`
	// RejectedInput: refused for what the event is (schema violation, undecodable, refused by
	// ClickHouse as data). RejectedOutput: dead-lettered for a failure after the event was
	// accepted (retries exhausted): a valid event that was not stored, a failure unless redriven.
	RejectedInput  int            `json:"rejected_input"`
	RejectedOutput int            `json:"rejected_output"`
	RejectedBy     map[string]int `json:"rejected_by_reason"`
	// Redriven: rejected, then valid (put back through validation).
	Redriven int `json:"redriven"`
	// Unvalidated: accepted, settled by the validator, yet in neither the valid nor the rejected stream.
	Unvalidated []string `json:"unvalidated"`
	// Missing: valid, settled by the writer, yet not in ClickHouse (nor rejected by the writer).
	Missing []string `json:"missing"`
	// RejectedOutputIDs: rejected on the output side and never redriven.
	RejectedOutputIDs []string `json:"rejected_output_ids"`
	// Unaccepted: valid or rejected, yet not in the raw stream, which every event enters first: the
	// raw stream lost messages (a damaged store), or something wrote past the gateway.
	Unaccepted []string `json:"unaccepted"`
	// Duplicated: held by more than one row in ClickHouse.
	Duplicated []string `json:"duplicated"`
	// Unknown: in ClickHouse but in no valid message (written by something else).
	Unknown      []string `json:"unknown"`
	MissingN     int      `json:"missing_count"`
	DuplicatedN  int      `json:"duplicated_count"`
	UnvalidatedN int      `json:"unvalidated_count"`
	UnknownN     int      `json:"unknown_count"`
	UnacceptedN  int      `json:"unaccepted_count"`
}

// Report is the result of a reconciliation.
type Report struct {
	// Since is where the reconciliation starts: the time asked for, or later when the streams no
	// longer hold events that old (RequestedSince).
	Since          time.Time `json:"since"`
	RequestedSince time.Time `json:"requested_since"`
	Until          time.Time `json:"until"`
	Window         string    `json:"window"`
	Organizations  []Org     `json:"organizations"`
	// OK is true when nothing is lost, duplicated or unaccepted.
	OK   bool  `json:"ok"`
	Cost Stats `json:"cost"`
}

// Stats is what a reconciliation read and held.
type Stats struct {
	Windows          int   `json:"windows"`
	RawMessages      int64 `json:"raw_messages"`
	ValidMessages    int64 `json:"valid_messages"`
	RejectedMessages int64 `json:"rejected_messages"`
	StoredIDs        int64 `json:"stored_ids"`
	// PeakWindowEvents is the most events one window held in memory.
	PeakWindowEvents int `json:"peak_window_events"`
}

// Store is what reconcile reads from ClickHouse.
type Store interface {
	EachID(ctx context.Context, f store.IDFilter, fn func(org, id string, rows uint64) error) error
}

// Options choose what to reconcile.
type Options struct {
	Since time.Time
	// Until ends the reconciliation (zero: now).
	Until time.Time
	// Window is the receive-time span held in memory at once (zero: DefaultWindow).
	Window time.Duration
	// Org, when set, reconciles that organization only.
	Org string
	// Slack is DefaultSlack when zero.
	Slack time.Duration
}

// Run reconciles the events received in [Since, Until).
func Run(ctx context.Context, js jetstream.JetStream, st Store, opts Options) (*Report, error) {
	now := time.Now()
	if opts.Until.IsZero() || opts.Until.After(now) {
		opts.Until = now
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Slack <= 0 {
		opts.Slack = DefaultSlack
	}
	r := &reconciler{js: js, st: st, org: opts.Org, slack: opts.Slack, orgs: map[string]*Org{}}
	var err error
	if r.raw, err = openStream(ctx, js, event.StreamRaw, event.ConsumerValidator); err != nil {
		return nil, err
	}
	if r.valid, err = openStream(ctx, js, event.StreamValid, event.ConsumerWriter); err != nil {
		return nil, err
	}
	if r.rejected, err = openStream(ctx, js, event.StreamRejected, ""); err != nil {
		return nil, err
	}
	rep := &Report{RequestedSince: opts.Since, Since: opts.Since, Until: opts.Until, Window: opts.Window.String(), OK: true}
	// The raw and valid streams give up messages every consumer has settled after a while: before
	// the oldest they still hold (and its slack), there is nothing to compare ClickHouse with.
	for _, s := range []*streamState{r.raw, r.valid} {
		if s.trimmed && s.first.Add(r.slack).After(rep.Since) {
			rep.Since = s.first.Add(r.slack)
		}
	}
	// Window bounds on whole milliseconds, as ClickHouse compares received_at (DateTime64(3)).
	rep.Since, rep.Until = rep.Since.Truncate(time.Millisecond), rep.Until.Truncate(time.Millisecond)
	opts.Until = rep.Until
	opts.Window = max(opts.Window.Truncate(time.Millisecond), time.Millisecond)
	for t0 := rep.Since; t0.Before(opts.Until); t0 = t0.Add(opts.Window) {
		if err := r.window(ctx, t0, minTime(t0.Add(opts.Window), opts.Until)); err != nil {
			return nil, err
		}
		rep.Cost.Windows++
	}
	rep.Cost.RawMessages, rep.Cost.ValidMessages, rep.Cost.RejectedMessages = r.raw.read, r.valid.read, r.rejected.read
	rep.Cost.StoredIDs, rep.Cost.PeakWindowEvents = r.storedIDs, r.peak
	names := make([]string, 0, len(r.orgs))
	for name := range r.orgs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		o := r.orgs[name]
		for _, l := range [][]string{o.Unvalidated, o.Missing, o.Duplicated, o.Unknown, o.Unaccepted, o.RejectedOutputIDs} {
			sort.Strings(l)
		}
		rep.OK = rep.OK && o.Lost == 0 && o.DuplicatedN == 0 && o.UnacceptedN == 0
		rep.Organizations = append(rep.Organizations, *o)
	}
	return rep, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// streamState is what a reconciliation knows of a stream: how far it reaches now, and the ack
// floor of the consumer that settles it.
type streamState struct {
	name  string
	first time.Time // the oldest message's time (zero when the stream is empty)
	last  uint64    // the last sequence when the reconciliation started
	end   time.Time // ... and its time
	// trimmed: the stream no longer holds its first messages.
	trimmed bool
	floor   uint64 // the consumer's ack floor (0 without a consumer)
	read    int64
}

func openStream(ctx context.Context, js jetstream.JetStream, name, consumer string) (*streamState, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", name, err)
	}
	st := &streamState{name: name}
	if info.State.Msgs > 0 {
		st.first, st.last, st.end = info.State.FirstTime, info.State.LastSeq, info.State.LastTime
	}
	st.trimmed = info.State.FirstSeq > 1
	if consumer != "" {
		if c, err := js.Consumer(ctx, name, consumer); err == nil {
			ci, err := c.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("failed to read consumer %s: %w", consumer, err)
			}
			st.floor = ci.AckFloor.Stream
		}
	}
	return st, nil
}

// Flags of an event within a window.
const (
	inRaw          = 1 << iota
	rawSettled     // its raw message is at or below the validator's ack floor
	inValid        // in the valid stream
	validSettled   // ... at or below the writer's ack floor
	inRejected     // in the rejected stream
	rejectedOutput // ... for a reason on the output side
	rejectedWriter // ... by the writer (refused by ClickHouse as data)
)

type state struct {
	flags    uint8
	rows     uint32
	category string
}

// needs of a window: events whose counterpart has not been read yet.
func (s *state) unmatched() bool { return s.flags&rawSettled != 0 && s.flags&(inValid|inRejected) == 0 }
func (s *state) noValid() bool   { return s.rows > 0 && s.flags&inValid == 0 }
func (s *state) noRaw() bool     { return s.flags&(inValid|inRejected) != 0 && s.flags&inRaw == 0 }

type reconciler struct {
	js                        jetstream.JetStream
	st                        Store
	org                       string // only this organization, when set
	slack                     time.Duration
	raw, valid, rejected      *streamState
	orgs                      map[string]*Org
	storedIDs                 int64
	peak                      int
	events                    map[[2]string]*state
	unmatched, noValid, noRaw int
}

// update applies change to the event (org, id) and keeps the window's counts of needs.
func (r *reconciler) update(org, id string, change func(*state)) {
	k := [2]string{org, id}
	s := r.events[k]
	if s == nil {
		s = &state{}
		r.events[k] = s
	}
	count := func(sign int) {
		if s.unmatched() {
			r.unmatched += sign
		}
		if s.noValid() {
			r.noValid += sign
		}
		if s.noRaw() {
			r.noRaw += sign
		}
	}
	count(-1)
	change(s)
	count(1)
}

// window reconciles the events received in [t0, t1).
func (r *reconciler) window(ctx context.Context, t0, t1 time.Time) error {
	r.events, r.unmatched, r.noValid, r.noRaw = map[[2]string]*state{}, 0, 0, 0
	in := func(m *message) bool {
		return !m.receivedAt.Before(t0) && m.receivedAt.Before(t1) && (r.org == "" || m.org == r.org)
	}
	bound := t1.Add(r.slack)
	past := func(m *message) bool { return !m.at.Before(bound) }

	raw, err := r.scan(ctx, r.raw, t0)
	if err != nil {
		return err
	}
	onRaw := func(m *message) {
		if in(m) {
			r.update(m.org, m.id, func(s *state) {
				s.flags |= inRaw
				if m.seq <= r.raw.floor {
					s.flags |= rawSettled
				}
			})
		}
	}
	if err := raw.until(ctx, past, onRaw); err != nil {
		return err
	}
	rej, err := r.scan(ctx, r.rejected, t0)
	if err != nil {
		return err
	}
	onRejected := func(m *message) {
		if in(m) {
			r.update(m.org, m.id, func(s *state) {
				s.flags |= inRejected
				s.category, s.flags = categorize(m, s.flags)
			})
		}
	}
	if err := rej.until(ctx, past, onRejected); err != nil {
		return err
	}
	if err := r.st.EachID(ctx, store.IDFilter{Org: r.org, From: t0, To: t1}, func(org, id string, rows uint64) error {
		r.storedIDs++
		r.update(org, id, func(s *state) { s.rows = uint32(min(rows, 1<<31)) })
		return nil
	}); err != nil {
		return fmt.Errorf("failed to read stored ids received from %s: %w", t0.Format(time.RFC3339), err)
	}
	valid, err := r.scan(ctx, r.valid, t0)
	if err != nil {
		return err
	}
	onValid := func(m *message) {
		if in(m) {
			r.update(m.org, m.id, func(s *state) {
				s.flags |= inValid
				if m.seq <= r.valid.floor {
					s.flags |= validSettled
				}
			})
		}
	}
	// Past the window's end, read on only for what is still unaccounted for: an event the
	// validator settled with no output found yet, a stored event with no valid message found yet,
	// an output with no accepted event found yet. Normally nothing is, and reading stops there.
	if err := valid.until(ctx, func(m *message) bool { return past(m) && r.unmatched == 0 && r.noValid == 0 }, onValid); err != nil {
		return err
	}
	if err := rej.until(ctx, func(*message) bool { return r.unmatched == 0 }, onRejected); err != nil {
		return err
	}
	if err := raw.until(ctx, func(*message) bool { return r.noRaw == 0 }, onRaw); err != nil {
		return err
	}
	r.peak = max(r.peak, len(r.events))
	r.tally()
	return nil
}

// tally adds the window's events to their organizations' counts.
func (r *reconciler) tally() {
	for k, s := range r.events {
		o := r.orgs[k[0]]
		if o == nil {
			o = &Org{Organization: k[0], RejectedBy: map[string]int{}, Unvalidated: []string{}, Missing: []string{},
				Unaccepted: []string{}, Duplicated: []string{}, Unknown: []string{}, RejectedOutputIDs: []string{}}
			r.orgs[k[0]] = o
		}
		id, f := k[1], s.flags
		if f&inRaw != 0 {
			o.Accepted++
		}
		if f&inValid != 0 {
			o.Valid++
		}
		if s.rows > 0 {
			o.Stored++
		}
		if f&inRejected != 0 {
			o.Rejected++
			o.RejectedBy[s.category]++
			switch {
			case f&rejectedOutput != 0:
				o.RejectedOutput++
			default:
				o.RejectedInput++
			}
			switch {
			case f&rejectedWriter != 0:
			case f&inValid != 0:
				o.Redriven++
			case f&rejectedOutput != 0:
				o.Lost++
				o.RejectedOutputIDs = appendCapped(o.RejectedOutputIDs, id)
			}
		}
		switch {
		case f&inRaw != 0 && f&(inValid|inRejected) == 0 && f&rawSettled != 0:
			o.Lost++
			o.UnvalidatedN++
			o.Unvalidated = appendCapped(o.Unvalidated, id)
		case f&inRaw != 0 && f&(inValid|inRejected) == 0:
			o.InFlight++
		case f&inValid != 0 && s.rows == 0 && f&rejectedWriter == 0 && f&validSettled != 0:
			o.Lost++
			o.MissingN++
			o.Missing = appendCapped(o.Missing, id)
		case f&inValid != 0 && s.rows == 0 && f&rejectedWriter == 0:
			o.InFlight++
		}
		if f&(inValid|inRejected) != 0 && f&inRaw == 0 {
			o.UnacceptedN++
			o.Unaccepted = appendCapped(o.Unaccepted, id)
		}
		if s.rows > 1 {
			o.DuplicatedN++
			o.Duplicated = appendCapped(o.Duplicated, id)
		}
		if s.rows > 0 && f&inValid == 0 {
			o.UnknownN++
			o.Unknown = appendCapped(o.Unknown, id)
		}
		o.Pending = o.InFlight
	}
}

// categorize names the category of a rejected message (event.ClassifyReject: its category and
// side headers, or its reason text for messages written before them) and flags its side.
func categorize(m *message, flags uint8) (string, uint8) {
	cat, side := event.ClassifyReject(m.category, m.side, m.reason)
	if side == event.SideOutput {
		flags |= rejectedOutput
	}
	if cat == event.RejectStoreRefused {
		flags |= rejectedWriter
	}
	return cat, flags
}

func appendCapped(l []string, id string) []string {
	if len(l) < MaxListed {
		return append(l, id)
	}
	return l
}

// message is what reconcile reads of a stream message.
type message struct {
	seq        uint64
	at         time.Time // the stream's time of the message
	org, id    string
	receivedAt time.Time
	reason     string // rejected messages: why
	category   string // rejected messages: event.HeaderRejectCategory
	side       string // rejected messages: event.HeaderRejectSide
}

// scanner reads a stream in order from a start time up to the sequence the stream ended at when
// the reconciliation started.
type scanner struct {
	s    *streamState
	c    jetstream.Consumer
	seq  uint64 // the last sequence read
	buf  []*message
	done bool
}

func (r *reconciler) scan(ctx context.Context, s *streamState, from time.Time) (*scanner, error) {
	sc := &scanner{s: s}
	start := from.Add(-r.slack)
	if s.last == 0 || start.After(s.end) {
		sc.done = true // nothing that recent
		return sc, nil
	}
	c, err := r.js.OrderedConsumer(ctx, s.name, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", s.name, err)
	}
	sc.c = c
	return sc, nil
}

// until reads messages, calling fn on each, until stop says so (before fn) or the stream ends.
func (sc *scanner) until(ctx context.Context, stop func(*message) bool, fn func(*message)) error {
	for {
		if len(sc.buf) == 0 {
			if sc.done {
				return nil
			}
			if err := sc.fill(ctx); err != nil {
				return err
			}
			continue
		}
		m := sc.buf[0]
		if stop(m) {
			return nil
		}
		sc.buf = sc.buf[1:]
		fn(m)
	}
}

// fill fetches the next messages, asking for exactly what is left up to the last sequence (at
// most 1,000) so that no fetch waits for messages that will not come.
func (sc *scanner) fill(ctx context.Context) error {
	want := 1
	if sc.seq > 0 {
		want = int(min(1000, sc.s.last-sc.seq))
	}
	if want <= 0 {
		sc.done = true
		return nil
	}
	b, err := sc.c.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", sc.s.name, err)
	}
	n := 0
	for m := range b.Messages() {
		n++
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("failed to read stream %s: %w", sc.s.name, err)
		}
		sc.seq = meta.Sequence.Stream
		if sc.seq > sc.s.last {
			sc.done = true
			break
		}
		sc.s.read++
		var rec struct {
			ID             string    `json:"id"`
			OrganizationID string    `json:"organization_id"`
			ReceivedAt     time.Time `json:"received_at"`
		}
		if json.Unmarshal(m.Data(), &rec) != nil || rec.ID == "" {
			continue // undecodable: no event to account for
		}
		msg := &message{seq: sc.seq, at: meta.Timestamp, org: rec.OrganizationID, id: rec.ID, receivedAt: rec.ReceivedAt}
		if h := m.Headers(); h != nil {
			msg.reason, msg.side = h.Get(event.HeaderRejectReason), h.Get(event.HeaderRejectSide)
			msg.category = h.Get(event.HeaderRejectCategory)
		}
		sc.buf = append(sc.buf, msg)
	}
	if err := b.Error(); err != nil && n == 0 && !errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("failed to read stream %s: %w", sc.s.name, err)
	}
	if n == 0 || sc.seq >= sc.s.last {
		sc.done = true
	}
	return nil
}
