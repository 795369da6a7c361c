// Package redrive puts chosen rejected events back through validation, exactly once: after a
// schema was corrected, after a validator bug was fixed, or for the events earlier versions
// dead-lettered because an output failed. Both `POST /admin/rejected/redrive` (single process) and
// the `redrive` command (services) run it.
//
// A rejected message is redriven by publishing its record, unchanged, to the raw stream on its own
// subject, logbook.raw.<org>.r.<rejected seq>, with Nats-Expected-Last-Subject-Sequence: 0, and the
// headers Logbook-Redrive-Of (the rejected sequence) and Logbook-Redrive-Schema (pinned or current).
// The validator validates it like any raw message and republishes it under
// <org>:<id>:redrive:<seq>. Two guards make a redrive happen once:
//   - a marker per event in the logbook_redrives bucket (kept until deleted), created before the
//     publish (claimed) and completed after it (published), compare-and-set: a second redrive of the
//     same event (the same rejected message, or another copy of its rejection) is refused, unless the
//     rejected message is newer than the previous redrive, i.e. the redriven event was rejected again;
//   - the raw subject per rejected message: JetStream itself refuses a second publish while the raw
//     stream holds the first, which settles two concurrent calls and a rerun after a crash between
//     claim and publish.
//
// A claim older than ClaimHorizon that never completed is not published again (the raw stream may no
// longer show whether it was): it is reported as failed, for an operator to check.
package redrive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/selfaudit"
)

// Limits of one redrive.
const (
	// DefaultLimit and MaxLimit bound how many rejected messages one call handles; past it the
	// report says limit_reached and a second call goes on (what is done is skipped quickly).
	DefaultLimit = 10_000
	MaxLimit     = 100_000
	// MaxListed caps the events a report lists (the counts are exact).
	MaxListed = 1000
	// ClaimHorizon is how old an unfinished claim may be and still be completed by a rerun: less
	// than the raw stream's minimum retention (24 h), which proves whether it was published.
	ClaimHorizon = 23 * time.Hour
	// concurrency is how many rejected messages one call redrives at once.
	concurrency = 8
)

// Outcomes of one rejected message.
const (
	Redriven        = "redriven"
	WouldRedrive    = "would_redrive" // dry run
	AlreadyRedriven = "already_redriven"
	NotRedrivable   = "not_redrivable"
	Failed          = "failed"
)

// Request chooses rejected events and how to redrive them. Every filter is optional.
type Request struct {
	// Organization keeps one organization's rejects.
	Organization string `json:"organization_id,omitempty"`
	// Since and Until bound when the event was rejected (stored in the rejected stream).
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// Reason keeps rejects whose reason contains it (case-insensitive).
	Reason string `json:"reason,omitempty"`
	// Category keeps rejects of one category (event.Reject*).
	Category string `json:"category,omitempty"`
	// Schema is which schema redriven events are validated against: event.RedriveSchemaPinned,
	// event.RedriveSchemaCurrent, or "" for current on schema violations and unknown versions and
	// pinned otherwise.
	Schema string `json:"schema,omitempty"`
	// DryRun lists what would be redriven and changes nothing.
	DryRun bool `json:"dry_run"`
	// Limit caps the rejected messages handled (DefaultLimit when 0, at most MaxLimit).
	Limit int `json:"limit,omitempty"`
}

// Categories are the values Request.Category accepts.
var Categories = []string{event.RejectUndecodable, event.RejectInvalidRecord, event.RejectUnknownVersion,
	event.RejectSchemaViolation, event.RejectValidatorCrashed, event.RejectStoreRefused, event.RejectDeliveryLimit,
	event.RejectOther}

// Validate reports the first unusable field: its JSON name and why.
func (r *Request) Validate() (field string, err error) {
	switch {
	case r.Organization != "" && !event.ValidOrgID(r.Organization):
		return "organization_id", errors.New("organization_id may contain only letters, digits, '_' and '-'")
	case !r.Since.IsZero() && !r.Until.IsZero() && r.Until.Before(r.Since):
		return "until", errors.New("until must not be before since")
	case r.Category != "" && !slices.Contains(Categories, r.Category):
		return "category", fmt.Errorf("category must be one of %s", strings.Join(Categories, ", "))
	case r.Schema != "" && r.Schema != event.RedriveSchemaPinned && r.Schema != event.RedriveSchemaCurrent:
		return "schema", errors.New("schema must be pinned or current")
	case r.Limit < 0 || r.Limit > MaxLimit:
		return "limit", fmt.Errorf("limit must be between 1 and %d", MaxLimit)
	}
	return "", nil
}

// Event is one rejected message a redrive looked at.
type Event struct {
	RejectedSeq  uint64    `json:"rejected_seq"`
	Organization string    `json:"organization_id"`
	EventID      string    `json:"event_id,omitempty"`
	Category     string    `json:"category"`
	Side         string    `json:"side"`
	Reason       string    `json:"reason"`
	RejectedAt   time.Time `json:"rejected_at"`
	// Schema is what the redriven event is (or would be) validated against.
	Schema  string `json:"schema,omitempty"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// Report is a redrive's answer.
type Report struct {
	Object  string  `json:"object"` // "rejected_redrive"
	Request Request `json:"request"`
	// Matched counts the rejected messages the filters chose; the next four split them.
	Matched int `json:"matched"`
	// Redriven counts the events put back through validation (in a dry run: that would be).
	Redriven        int `json:"redriven"`
	AlreadyRedriven int `json:"already_redriven"`
	NotRedrivable   int `json:"not_redrivable"`
	Failed          int `json:"failed"`
	// ByCategory and ByOrganization count the matched messages.
	ByCategory     map[string]int `json:"by_category"`
	ByOrganization map[string]int `json:"by_organization"`
	// Events lists the matched messages, oldest first, up to MaxListed.
	Events          []Event `json:"events"`
	EventsTruncated bool    `json:"events_truncated"`
	// LimitReached: more rejected messages match than Limit; run again to go on.
	LimitReached bool `json:"limit_reached"`
}

// auditor records an administrative change before it is made (a *selfaudit.Recorder): an error
// (a 503 in the WorkOS envelope) means the change must not be made.
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// Redriver runs redrives. Safe for concurrent use.
type Redriver struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	audit auditor
	log   *slog.Logger
	now   func() time.Time
}

// New opens the redrive markers bucket.
func New(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Redriver, error) {
	kv, err := js.KeyValue(ctx, event.BucketRedrives)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketRedrives, err)
	}
	return &Redriver{js: js, kv: kv, audit: selfaudit.Discard, log: log, now: time.Now}, nil
}

// UseAudit makes r record every redrive it carries out (not dry runs) in Logbook's own audit
// trail, before it changes anything: what was asked (the filters and the schema choice), by whom
// (from the request's context). A redrive that cannot be recorded is not carried out. Call it
// before Run.
func (r *Redriver) UseAudit(a auditor) { r.audit = a }

// record records req in the audit trail.
func (r *Redriver) record(ctx context.Context, req Request) error {
	meta := map[string]any{"limit": req.Limit}
	for k, v := range map[string]string{"reason": req.Reason, "category": req.Category, "schema": req.Schema} {
		if v != "" {
			meta[k] = v
		}
	}
	if !req.Since.IsZero() {
		meta["since"] = req.Since.UTC().Format(time.RFC3339)
	}
	if !req.Until.IsZero() {
		meta["until"] = req.Until.UTC().Format(time.RFC3339)
	}
	var targets []event.Entity
	if req.Organization != "" {
		targets = append(targets, event.Entity{ID: req.Organization, Type: selfaudit.TargetOrganization})
	}
	return r.audit.Record(ctx, selfaudit.Entry{Action: selfaudit.RejectedRedriven, Targets: targets, Metadata: meta})
}

// candidate is a matched rejected message.
type candidate struct {
	Event
	data []byte
}

// Run redrives the rejected messages req chooses, or, with DryRun, says what it would do.
func (r *Redriver) Run(ctx context.Context, req Request, source string) (*Report, error) {
	if field, err := req.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if req.Limit == 0 {
		req.Limit = DefaultLimit
	}
	if !req.DryRun {
		if err := r.record(ctx, req); err != nil {
			return nil, err
		}
	}
	rep := &Report{Object: "rejected_redrive", Request: req, ByCategory: map[string]int{}, ByOrganization: map[string]int{}, Events: []Event{}}
	s, err := r.js.Stream(ctx, event.StreamRejected)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", event.StreamRejected, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", event.StreamRejected, err)
	}
	floor := info.State.LastSeq // every rejection this run causes lands past it
	var cands []candidate
	err = r.scan(ctx, req, floor, func(c candidate) bool {
		if len(cands) == req.Limit {
			rep.LimitReached = true
			return false
		}
		cands = append(cands, c)
		return true
	})
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(cands))
	var wg sync.WaitGroup
	sem := make(chan struct{}, concurrency)
	for i, c := range cands {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			events[i] = r.one(ctx, c, req, floor)
		}()
	}
	wg.Wait()
	for _, e := range events {
		rep.Matched++
		rep.ByCategory[e.Category]++
		rep.ByOrganization[e.Organization]++
		switch e.Outcome {
		case Redriven, WouldRedrive:
			rep.Redriven++
		case AlreadyRedriven:
			rep.AlreadyRedriven++
		case NotRedrivable:
			rep.NotRedrivable++
		default:
			rep.Failed++
		}
		if len(rep.Events) < MaxListed {
			rep.Events = append(rep.Events, e)
		} else {
			rep.EventsTruncated = true
		}
	}
	if !req.DryRun {
		r.log.Info("rejected events redriven", "source", source, "matched", rep.Matched, "redriven", rep.Redriven,
			"already_redriven", rep.AlreadyRedriven, "not_redrivable", rep.NotRedrivable, "failed", rep.Failed)
	}
	return rep, nil
}

// scan calls fn with each rejected message req chooses, oldest first, up to sequence last, until fn
// returns false.
func (r *Redriver) scan(ctx context.Context, req Request, last uint64, fn func(candidate) bool) error {
	if last == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !req.Since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &req.Since
	}
	if req.Organization != "" {
		cfg.FilterSubjects = []string{event.RejectedSubject(req.Organization)}
	}
	oc, err := r.js.OrderedConsumer(ctx, event.StreamRejected, cfg)
	if err != nil {
		return fmt.Errorf("failed to read stream %s: %w", event.StreamRejected, err)
	}
	reason := strings.ToLower(req.Reason)
	want := 1 // then exactly what is left, so no fetch waits for more
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := oc.Fetch(want, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("failed to read stream %s: %w", event.StreamRejected, err)
		}
		n, pending := 0, uint64(0)
		for m := range b.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			if meta.Sequence.Stream > last || (!req.Until.IsZero() && meta.Timestamp.After(req.Until)) {
				return nil
			}
			pending = meta.NumPending
			c := candidateOf(m, meta)
			if (req.Category == "" || c.Category == req.Category) && strings.Contains(strings.ToLower(c.Reason), reason) {
				if !fn(c) {
					return nil
				}
			}
			if meta.Sequence.Stream == last {
				return nil
			}
		}
		if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("failed to read stream %s: %w", event.StreamRejected, err)
		}
		if n == 0 || pending == 0 {
			return nil
		}
		want = int(min(1000, pending))
	}
}

func candidateOf(m jetstream.Msg, meta *jetstream.MsgMetadata) candidate {
	h := m.Headers()
	reason := h.Get(event.HeaderRejectReason)
	category, side := event.ClassifyReject(h.Get(event.HeaderRejectCategory), h.Get(event.HeaderRejectSide), reason)
	c := candidate{Event: Event{RejectedSeq: meta.Sequence.Stream, Organization: event.OrgFromSubject(m.Subject()),
		Category: category, Side: side, Reason: reason, RejectedAt: meta.Timestamp.UTC()}, data: m.Data()}
	var head struct {
		ID  string `json:"id"`
		Org string `json:"organization_id"`
	}
	if json.Unmarshal(c.data, &head) == nil && head.ID != "" && event.ValidOrgID(head.Org) {
		c.EventID, c.Organization = head.ID, head.Org
	}
	return c
}

// schemaFor is the schema a redriven event of category is validated against.
func schemaFor(req Request, category string) string {
	switch {
	case req.Schema != "":
		return req.Schema
	case category == event.RejectSchemaViolation || category == event.RejectUnknownVersion:
		return event.RedriveSchemaCurrent
	}
	return event.RedriveSchemaPinned
}

// marker is what the logbook_redrives bucket holds per redriven event.
type marker struct {
	EventID string `json:"event_id"`
	// RejectedSeq is the rejected message last redriven for the event; Floor the rejected
	// stream's last sequence when it was claimed: a rejection past it came from that redrive.
	RejectedSeq uint64    `json:"rejected_seq"`
	Floor       uint64    `json:"rejected_floor"`
	State       string    `json:"state"` // claimed, published
	Schema      string    `json:"schema"`
	At          time.Time `json:"at"`
}

func markerKey(org, eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return org + "." + hex.EncodeToString(sum[:16])
}

// one redrives (or, in a dry run, judges) one rejected message.
func (r *Redriver) one(ctx context.Context, c candidate, req Request, floor uint64) Event {
	e := c.Event
	if e.EventID == "" {
		e.Outcome, e.Detail = NotRedrivable, "the payload is not a record with an id and a valid organization"
		return e
	}
	e.Schema = schemaFor(req, e.Category)
	key := markerKey(e.Organization, e.EventID)
	fail := func(err error) Event {
		e.Outcome, e.Detail = Failed, err.Error()
		r.log.Warn("redrive failed", "org_id", e.Organization, "event_id", e.EventID, "rejected_seq", e.RejectedSeq, "err", err)
		return e
	}
	for range 10 {
		entry, err := r.kv.Get(ctx, key)
		var prev *marker
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fail(fmt.Errorf("failed to read redrive marker: %w", err))
		default:
			prev = &marker{}
			if err := json.Unmarshal(entry.Value(), prev); err != nil {
				return fail(fmt.Errorf("unreadable redrive marker %s: %w", key, err))
			}
		}
		resume := prev != nil && prev.RejectedSeq == e.RejectedSeq
		switch {
		case resume && prev.State == "published":
			e.Outcome, e.Schema = AlreadyRedriven, prev.Schema
			return e
		case resume && r.now().Sub(prev.At) > ClaimHorizon:
			e.Schema = prev.Schema
			return fail(fmt.Errorf("a redrive of this message claimed at %s never completed and is too old to "+
				"complete safely; check whether event %s is stored", prev.At.Format(time.RFC3339), e.EventID))
		case prev != nil && !resume && e.RejectedSeq <= prev.Floor:
			e.Outcome, e.Schema = AlreadyRedriven, prev.Schema
			e.Detail = fmt.Sprintf("the event was redriven from rejected message %d", prev.RejectedSeq)
			return e
		}
		if req.DryRun {
			e.Outcome = WouldRedrive
			return e
		}
		m := marker{EventID: e.EventID, RejectedSeq: e.RejectedSeq, Floor: floor, State: "claimed", Schema: e.Schema, At: r.now().UTC()}
		if resume { // a claim a crash or a concurrent call left: complete it as claimed
			m = *prev
			e.Schema = m.Schema
		} else {
			raw, _ := json.Marshal(m)
			if prev == nil {
				_, err = r.kv.Create(ctx, key, raw)
			} else {
				_, err = r.kv.Update(ctx, key, raw, entry.Revision())
			}
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // another call got there first: look again
			}
			if err != nil {
				return fail(fmt.Errorf("failed to claim redrive: %w", err))
			}
		}
		published, err := r.publish(ctx, c, m.Schema)
		if err != nil {
			return fail(err)
		}
		m.State = "published"
		raw, _ := json.Marshal(m)
		if _, err := r.kv.Put(ctx, key, raw); err != nil {
			r.log.Warn("failed to mark redrive published (a rerun completes it)", "event_id", e.EventID, "err", err)
		}
		e.Outcome = Redriven
		if !published {
			e.Outcome, e.Detail = AlreadyRedriven, "the raw stream already holds this redrive"
		}
		return e
	}
	return fail(errors.New("too much contention on the redrive marker"))
}

// publish puts c's record on its redrive subject of the raw stream. published is false when the
// raw stream already held it (a concurrent call, or a rerun after a crash).
func (r *Redriver) publish(ctx context.Context, c candidate, schema string) (published bool, err error) {
	seq := strconv.FormatUint(c.RejectedSeq, 10)
	msg := nats.NewMsg(event.RawRedriveSubject(c.Organization, c.RejectedSeq))
	msg.Data = c.data
	msg.Header.Set(jetstream.MsgIDHeader, c.Organization+":redrive:"+seq)
	msg.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRaw)
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	msg.Header.Set(event.HeaderRedriveOf, seq)
	msg.Header.Set(event.HeaderRedriveSchema, schema)
	ack, err := r.js.PublishMsg(ctx, msg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to publish redrive of rejected message %d: %w", c.RejectedSeq, err)
	}
	return !ack.Duplicate, nil
}
