package logstream

import (
	"context"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/wire"
)

// AuditOrg is the reserved organization Logbook records its own changes in (the self-audit of
// the API keys work, event.SelfAuditOrgID there): log streams, alert rules and alert firings are
// recorded as its events, searchable and exportable like any other.
const AuditOrg = "org_logbook"

// Actions recorded.
const (
	ActionCreated  = "logbook.log_stream.created"
	ActionUpdated  = "logbook.log_stream.updated"
	ActionPaused   = "logbook.log_stream.paused"
	ActionResumed  = "logbook.log_stream.resumed"
	ActionReplayed = "logbook.log_stream.replayed"
	ActionDeleted  = "logbook.log_stream.deleted"
)

// Change is one administrative change (or an alert firing) to put on record.
type Change struct {
	// ID, when set, is the event id of the record (a ULID), so that recording the same thing again
	// is deduplicated by the raw stream; else a new one is made.
	ID string
	// At, when set, is when it happened; else now.
	At time.Time
	// Action is what happened ("logbook.log_stream.created").
	Action string
	// Targets are what changed: the stream or rule, and the organization.
	Targets []event.Entity
	// Metadata holds the details: strings of at most 500 characters, numbers, booleans.
	Metadata map[string]any
}

// Recorder puts changes on record before they are made: a change that cannot be recorded is not
// made. The self-audit recorder of the API keys work (pkg/selfaudit) fits behind it with a
// two-line adapter; RawRecorder is the minimal one used until then.
type Recorder interface {
	Record(ctx context.Context, c Change) error
}

type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// RawRecorder records a change as an event of AuditOrg published to the raw stream, so it is
// validated, stored and searchable like any other event. The actor is "logbook" (system); the
// request's id goes into the metadata when known.
type RawRecorder struct {
	Pub   publisher
	NewID func(time.Time) string
	Now   func() time.Time
}

// Record publishes c and returns once JetStream stored it, or a 503 *wire.Error.
func (r RawRecorder) Record(ctx context.Context, c Change) error {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	t := now().UTC().Truncate(time.Millisecond)
	if !c.At.IsZero() {
		t = c.At.UTC().Truncate(time.Millisecond)
	}
	id := c.ID
	if id == "" {
		id = r.NewID(t)
	}
	targets := c.Targets
	if targets == nil {
		targets = []event.Entity{}
	}
	rec := &event.Record{
		ID: id, OrganizationID: AuditOrg, ReceivedAt: t,
		Event: event.Event{Action: c.Action, OccurredAt: t, Actor: event.Entity{ID: "logbook", Type: "system", Name: "Logbook"},
			Targets: targets, Context: event.Context{Location: "unknown"}, Metadata: c.Metadata},
		Schema: &event.SchemaRef{Scope: event.SchemaNone},
	}
	data, err := rec.Marshal()
	if err == nil {
		msg := nats.NewMsg(event.RawSubject(AuditOrg))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, err = r.Pub.PublishMsg(pctx, msg, jetstream.WithExpectStream(event.StreamRaw))
		cancel()
	}
	if err != nil {
		return &wire.Error{Status: http.StatusServiceUnavailable, Code: "audit_unavailable", RetryAfter: 1,
			Message: "The change could not be recorded in Logbook's audit trail, so it was not made; retry shortly."}
	}
	return nil
}
