package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Idempotency-Keys. The raw stream is the record of every key: an event sent with a key is
// published on the key's own subject (event.RawKeySubject) with an expected last subject sequence
// of 0, so JetStream stores it only if that subject holds nothing, and with the digest of the
// request in a header. When JetStream refuses it because the subject is taken, the gateway reads
// the message there: the same digest is a repeat of a stored request (answered as the first was,
// nothing published), another digest is 409 idempotency_error. One durable write per keyed
// request, and no state of its own to lose: whatever happened to an earlier attempt (a crash
// before the answer, an ambiguous publish), its message is either in the stream, and found, or
// not, and the retry stores its own. The raw stream keeps every message at least
// natsx.IdempotencyTTL (24 hours), so a key holds at least that long.

// maxKeyAttempts bounds the publishes of one keyed event while its subject is taken by a message
// not yet readable (on a replicated stream, a concurrent publish of the same key in process).
const maxKeyAttempts = 8

// prepare checks req's schema and builds its record (the identity and receive time the gateway
// gives it) and, for a keyed request, its digest.
func (gw *Gateway) prepare(ctx context.Context, req *validate.CreateEvent, key string, now time.Time, res *LineResult) (*bulkLine, error) {
	ref, err := gw.checkSchema(ctx, req.OrganizationID, &req.Event)
	if err != nil {
		return nil, err
	}
	rec := &event.Record{
		ID:             gw.newID(now),
		OrganizationID: req.OrganizationID,
		ReceivedAt:     now.Truncate(time.Millisecond),
		Event:          req.Event,
		Schema:         ref,
	}
	l := &bulkLine{res: res, rec: rec, key: key}
	if key != "" {
		if l.digest, err = requestDigest(rec.OrganizationID, &rec.Event); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// requestDigest is the digest of a create-event request: its organization and the event as
// Logbook parsed it (so key order and white space do not matter), SHA-256, hex.
func requestDigest(org string, ev *event.Event) (string, error) {
	b, err := json.Marshal(struct {
		Org   string       `json:"organization_id"`
		Event *event.Event `json:"event"`
	}{org, ev})
	if err != nil {
		return "", fmt.Errorf("failed to digest request: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// store publishes l's record and sets l's result: accepted (stored now), duplicate (its key's
// request was stored before: the id is that event's), or an error (409 for a key used with
// another request, 503 when the event is not known to be stored).
func (gw *Gateway) store(ctx context.Context, l *bulkLine) {
	data, err := l.rec.Marshal()
	if err != nil {
		l.fail(err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, gw.cfg.PublishTimeout)
	defer cancel()
	gw.settle(ctx, l, data, gw.pub.Publish(ctx, l.message(data)))
}

// settle sets l's result from err, the outcome of publishing l's record (encoded as data) once,
// publishing it again where that is how the answer is found (an unconfirmed publish, a key's
// subject taken by a message not readable yet).
func (gw *Gateway) settle(ctx context.Context, l *bulkLine, data []byte, err error) {
	unavailable := func(what string, err error) {
		// Whatever the cause (full stream, NATS away, timeout), the event is not known to be
		// stored: never answer 2xx. A retry with the same Idempotency-Key is safe.
		gw.log.Warn(what, "org_id", l.rec.OrganizationID, "event_id", l.rec.ID, "err", err)
		l.fail(wire.Unavailable("The event could not be stored right now; retry shortly.", 1))
	}
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			err = gw.pub.Publish(ctx, l.message(data))
		}
		if err == nil {
			failpoint.Inject("gateway-after-publish") // stored, not yet answered
			l.res.Status, l.res.ID = LineAccepted, l.rec.ID
			return
		}
		if l.key == "" && errors.Is(err, natsx.ErrUnconfirmed) {
			err = gw.confirm(ctx, l.message(data))
			if err == nil {
				failpoint.Inject("gateway-after-publish")
				l.res.Status, l.res.ID = LineAccepted, l.rec.ID
				return
			}
		}
		if l.key == "" || !subjectTaken(err) {
			unavailable("publish failed", err)
			return
		}
		prior, err := gw.stored(ctx, l.rec.OrganizationID, l.key)
		switch {
		case err != nil:
			unavailable("failed to read the stored request of an idempotency key", err)
		case prior == nil && attempt < maxKeyAttempts:
			// Taken by a message not readable yet (in process): publish again shortly; either
			// that message is stored by then, or it failed and this one can be.
			if sleep(ctx, time.Duration(attempt)*5*time.Millisecond) == nil {
				continue
			}
			unavailable("idempotency key busy", ctx.Err())
		case prior == nil:
			unavailable("idempotency key busy", errors.New("the key's subject stayed taken and empty"))
		case prior.digest == l.digest:
			l.res.Status, l.res.ID = LineDuplicate, prior.id
		default:
			l.fail(wire.Conflict("idempotency_error",
				"This idempotency key was already used with a different request in the last 24 hours."))
		}
		return
	}
}

// confirm settles an unconfirmed publish of an event without an Idempotency-Key (it may or may not
// be stored): it publishes the same message again, under the same message id, until JetStream
// answers. Inside the duplicate window an answer means stored (a duplicate is acknowledged as
// one), so the producer is told the truth either way: 200 for an event in the stream, 503 only for
// one that is not — or, if JetStream stays silent past the request's own deadline and a second
// one, for one whose fate is unknown (docs/api.md says to send keys where that matters).
func (gw *Gateway) confirm(ctx context.Context, msg *nats.Msg) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gw.cfg.PublishTimeout)
	defer cancel()
	var err error
	for attempt := 1; ; attempt++ {
		if err = gw.pub.Publish(ctx, msg); err == nil || !errors.Is(err, natsx.ErrUnconfirmed) {
			return err
		}
		if sleep(ctx, time.Duration(attempt)*50*time.Millisecond) != nil {
			return err
		}
	}
}

// message is l's raw message (RawMessage).
func (l *bulkLine) message(data []byte) *nats.Msg { return RawMessage(l.rec, l.key, l.digest, data) }

// RawMessage is the raw stream message of rec (encoded as data), sent with Idempotency-Key key
// ("" for none; digest is then the request's digest): on the organization's subject, or on its
// key's subject only if that subject holds nothing yet. Its message id is the event's identity in
// every case, so it never collapses two attempts of a key (the subject decides between them) and
// two requests sharing a key are never mistaken for one by the group committer. make bench's
// publish ceiling sends exactly these messages.
func RawMessage(rec *event.Record, key, digest string, data []byte) *nats.Msg {
	subject := event.RawSubject(rec.OrganizationID)
	if key != "" {
		subject = event.RawKeySubject(rec.OrganizationID, key)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
	msg.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRaw)
	if key != "" {
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.Itoa(0))
		msg.Header.Set(event.HeaderRequestDigest, digest)
	}
	return msg
}

// subjectTaken reports whether err is JetStream refusing a message because its expected last
// subject sequence does not hold: the key's subject holds a message (10071), or, on a replicated
// stream or inside an atomic batch, a message for it is in process (10164).
func subjectTaken(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// storedRequest is what the raw stream holds for a key: the digest of the request and the id
// the gateway gave its event.
type storedRequest struct {
	digest, id string
}

// stored reads the message org's key holds, or nil when it holds none.
func (gw *Gateway) stored(ctx context.Context, org, key string) (*storedRequest, error) {
	m, err := gw.keys.GetLastMsgForSubject(ctx, event.RawKeySubject(org, key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var head struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(m.Data, &head); err != nil {
		return nil, fmt.Errorf("failed to decode the stored request of a key: %w", err)
	}
	return &storedRequest{digest: m.Header.Get(event.HeaderRequestDigest), id: head.ID}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Publisher is how the gateway's raw messages reach JetStream: a group committer on the raw
// stream. Close stops it.
type Publisher interface {
	publisher
	Check(ctx context.Context) error
	Close()
}

// NewPublisher starts the raw stream's publisher on nc. The single process, the ingest service and
// make bench's publish ceiling all use it, so the ceiling measures the path the gateway takes.
func NewPublisher(nc *nats.Conn, js jetstream.JetStream) Publisher {
	return natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
}
