// Package selfaudit records Logbook's own administrative changes as audit events of the reserved
// organization event.SelfAuditOrgID ("org_logbook"): API keys created and revoked, schemas
// registered and retired, retentions changed, exports requested, viewer links issued, rejected
// events redriven. A record is an ordinary event record published to the raw stream, so it is
// validated, stored, searched and exported like any other; its actor is the caller (the API key's
// name, type "api_key") and its context.location the request's source address.
//
// Order: a change is recorded before it is made. Record returns only once JetStream has stored the
// record (fsynced); when it cannot, the admin request answers 503 and changes nothing. So every
// change is on record; a change that fails after its record leaves a record of the attempt (its
// metadata request_id matches the failed response's X-Request-ID).
package selfaudit

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/wire"
)

// OrgID is the organization the records go to.
const OrgID = event.SelfAuditOrgID

// The actions Logbook records. Other work streams add theirs here.
const (
	KeyCreated       = "logbook.api_key.created"
	KeyRevoked       = "logbook.api_key.revoked"
	SchemaRegistered = "logbook.schema.registered"
	SchemaRetired    = "logbook.schema.retired"
	RetentionUpdated = "logbook.retention.updated"
	ExportRequested  = "logbook.export.requested"
	ViewerLinkIssued = "logbook.viewer_link.issued"
	RejectedRedriven = "logbook.rejected_events.redriven"
)

// Target types of the records.
const (
	TargetAPIKey       = "api_key"
	TargetOrganization = "organization"
	TargetAction       = "audit_log_action"
	TargetSchema       = "audit_log_schema"
	TargetExport       = "audit_log_export"
)

// Entry is one administrative change. The actor and context come from the request's context
// (wire.CallerFrom): the caller's name and type, its address and user agent; request_id is added
// to the metadata.
type Entry struct {
	// Action is one of the constants above ("logbook.retention.updated").
	Action string
	// Targets are what changed: the organization, the key, the schema, the export.
	Targets []event.Entity
	// Metadata holds the change's details: strings (at most 500 characters), numbers, booleans;
	// at most 49 keys of at most 40 letters, digits, '_' or '-'.
	Metadata map[string]any
}

// publisher stores a message in JetStream: a jetstream.JetStream.
type publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Recorder publishes self-audit records to the raw stream. Safe for concurrent use.
type Recorder struct {
	pub     publisher
	log     *slog.Logger
	timeout time.Duration
	now     func() time.Time
	entropy io.Reader
}

// New returns a Recorder publishing through js.
func New(js publisher, log *slog.Logger) *Recorder {
	return &Recorder{pub: js, log: log, timeout: 10 * time.Second, now: time.Now, entropy: ulid.DefaultEntropy()}
}

// Record stores e as an event of OrgID and returns once JetStream acknowledged it. When it cannot,
// it logs why and returns a 503 (*wire.Error) to answer the admin request with: the caller must
// then not make the change.
func (r *Recorder) Record(ctx context.Context, e Entry) error {
	rec := r.build(ctx, e)
	data, err := rec.Marshal()
	if err == nil {
		msg := nats.NewMsg(event.RawSubject(OrgID))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
		msg.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRaw)
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		_, err = r.pub.PublishMsg(pctx, msg)
		cancel()
	}
	if err != nil {
		r.log.Error("administrative change not recorded, so not made", "action", e.Action, "err", err)
		return &wire.Error{Status: http.StatusServiceUnavailable, Code: "audit_unavailable", RetryAfter: 1,
			Message: "The change could not be recorded in Logbook's audit trail, so it was not made; retry shortly."}
	}
	return nil
}

// build makes the event record of e.
func (r *Recorder) build(ctx context.Context, e Entry) *event.Record {
	now := r.now().UTC().Truncate(time.Millisecond)
	meta := make(map[string]any, len(e.Metadata)+1)
	for k, v := range e.Metadata {
		meta[k] = v
	}
	ev := event.Event{
		Action:     e.Action,
		OccurredAt: now,
		Actor:      event.Entity{ID: "logbook", Type: "system", Name: "Logbook"},
		Targets:    e.Targets,
		Context:    event.Context{Location: "unknown"},
		Metadata:   meta,
	}
	if ev.Targets == nil {
		ev.Targets = []event.Entity{}
	}
	if c, ok := wire.CallerFrom(ctx); ok {
		ev.Actor = event.Entity{ID: c.Name, Type: c.ActorType, Name: c.Name}
		if c.Key != nil && c.Key.Prefix != "" {
			ev.Actor.Metadata = map[string]any{"key_prefix": c.Key.Prefix}
		}
		if c.IP != "" {
			ev.Context.Location = truncate(c.IP, 256)
		}
		ev.Context.UserAgent = truncate(c.UserAgent, 1024)
		if c.RequestID != "" {
			meta["request_id"] = c.RequestID
		}
	}
	if len(meta) == 0 {
		ev.Metadata = nil
	}
	return &event.Record{
		ID:             ulid.MustNew(ulid.Timestamp(now), r.entropy).String(),
		OrganizationID: OrgID,
		ReceivedAt:     now,
		Event:          ev,
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Discard records nothing: the default of the packages that record, until they are given a
// Recorder.
var Discard discard

type discard struct{}

// Record does nothing.
func (discard) Record(context.Context, Entry) error { return nil }

// Operator returns ctx naming the operator who runs a command (the `logbook keys` command): user
// is the account, host where it runs; both appear in the records.
func Operator(ctx context.Context, user, host string) context.Context {
	return wire.WithCaller(ctx, wire.Caller{ActorType: wire.ActorOperator, Name: user, IP: host, UserAgent: "logbook keys command"})
}

// StartUp returns ctx naming Logbook itself, on host, as the actor of the changes a process makes
// on its own when it starts (LOGBOOK_API_KEY applied).
func StartUp(ctx context.Context, host string) context.Context {
	return wire.WithCaller(ctx, wire.Caller{ActorType: "system", Name: "logbook", IP: host, UserAgent: "start-up"})
}

// KeyChanges returns the hook apikey.Store.BeforeChange takes: each key Logbook creates or revokes
// at start-up (LOGBOOK_API_KEY set or changed, the first generated key) is recorded with r first,
// as Logbook's own change (StartUp) with the reason in the metadata.
func KeyChanges(r interface {
	Record(ctx context.Context, e Entry) error
}, host string) func(ctx context.Context, c apikey.Change) error {
	return func(ctx context.Context, c apikey.Change) error {
		action := KeyCreated
		if c.Revoked {
			action = KeyRevoked
		}
		meta := map[string]any{"source": c.Key.Source, "reason": c.Reason}
		if c.Key.Prefix != "" {
			meta["key_prefix"] = c.Key.Prefix
		}
		return r.Record(StartUp(ctx, host), Entry{
			Action:   action,
			Targets:  []event.Entity{{ID: c.Key.Name, Type: TargetAPIKey}},
			Metadata: meta,
		})
	}
}
