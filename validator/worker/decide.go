package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/validate"
)

// decision is what to do with one raw message: publish out (to the valid stream when valid), or,
// when out is nil, wait: the decision needs schemas that cannot be read now (wait says why).
type decision struct {
	out   *nats.Msg
	valid bool
	wait  error
}

// decide validates m and builds the message to publish. A panic while deciding is the record's
// fault (it is the only input): the record is dead-lettered with the panic as the reason, and the
// rest of the batch goes on.
func (w *Worker) decide(ctx context.Context, m jetstream.Msg) (d decision) {
	defer func() {
		if p := recover(); p != nil {
			org, id, _ := identity(m, nil)
			w.log.Error("validation panicked; dead-lettering the record", "org_id", org, "msg_id", id,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			d = decision{out: rejected(m, org, id, event.RejectValidatorCrashed, fmt.Sprintf("validator crashed on it: panic: %v", p))}
		}
	}()
	rec, err := validate.ParseRecord(m.Data()) // decoded and structurally checked in one pass
	org, id, known := identity(m, rec)
	switch {
	case err == nil:
	case errors.Is(err, validate.ErrMalformed) || !known:
		return decision{out: rejected(m, org, id, event.RejectUndecodable, "undecodable record: "+err.Error())}
	default:
		return decision{out: rejected(m, org, id, event.RejectInvalidRecord, err.Error())}
	}
	if failpoint.Enabled() {
		failpoint.Inject("validator-validate:" + rec.Event.Action) // a record the process dies on
	}
	compiled, err := w.schemaFor(ctx, m, rec)
	switch {
	case errors.Is(err, schema.ErrUnknownVersion):
		return decision{out: rejected(m, org, id, event.RejectUnknownVersion, err.Error())}
	case err != nil:
		return decision{wait: fmt.Errorf("schema lookup for %s failed: %w", rec.Event.Action, err)}
	case compiled != nil:
		if errs := compiled.Validate(&rec.Event); errs != nil {
			reason, _ := json.Marshal(errs)
			return decision{out: rejected(m, org, id, event.RejectSchemaViolation, "schema violation: "+string(reason))}
		}
	}
	out := nats.NewMsg(event.ValidSubject(org))
	out.Data = m.Data()
	out.Header.Set(jetstream.MsgIDHeader, id)
	out.Header.Set(jetstream.ExpectedStreamHeader, event.StreamValid)
	copyRedrive(m, out)
	return decision{out: out, valid: true}
}

// schemaFor returns the schema rec must satisfy: the version it names, resolved as the gateway
// resolved it, unless a redrive asked for the current schema.
func (w *Worker) schemaFor(ctx context.Context, m jetstream.Msg, rec *event.Record) (*schema.Compiled, error) {
	if m.Headers().Get(event.HeaderRedriveOf) != "" && m.Headers().Get(event.HeaderRedriveSchema) == event.RedriveSchemaCurrent {
		return resolveCurrent(ctx, w.schemas, rec.OrganizationID, rec.Event.Action, rec.Event.Version)
	}
	// The version the gateway accepted the event under, when the record names one (see
	// schema.ResolveRecord): a schema registered since does not turn an answered event away.
	return schema.ResolveRecord(ctx, w.schemas, rec)
}

// versioned lists an action's schema versions (*schema.Registry does).
type versioned interface {
	Versions(org, action string) []schema.Schema
}

// resolveCurrent resolves the newest version of action's schema for org: org's own when it has
// any, else the environment's; a source that cannot list versions resolves version as named.
func resolveCurrent(ctx context.Context, s schema.Source, org, action string, version int) (*schema.Compiled, error) {
	if v, ok := s.(versioned); ok {
		version = len(v.Versions(org, action))
		if version == 0 {
			version = len(v.Versions("", action))
		}
		if version == 0 {
			return nil, nil // no schema: any event is accepted
		}
	}
	return schema.Resolve(ctx, s, org, action, version)
}

// identity names m on the output streams: org and message id. A record's own identity when it has
// one (under RedriveMsgID for a redriven record), else the raw stream sequence, so a redelivery is
// never rejected twice. known is false in the latter case.
func identity(m jetstream.Msg, rec *event.Record) (org, msgID string, known bool) {
	if rec == nil {
		var head struct {
			ID  string `json:"id"`
			Org string `json:"organization_id"`
		}
		if json.Unmarshal(m.Data(), &head) == nil && head.ID != "" && event.ValidOrgID(head.Org) {
			rec = &event.Record{ID: head.ID, OrganizationID: head.Org}
		}
	}
	if rec != nil {
		if seq := redriveOf(m); seq != "" {
			return rec.OrganizationID, rec.RedriveMsgID(seq), true
		}
		return rec.OrganizationID, rec.MsgID(), true
	}
	if meta, err := m.Metadata(); err == nil {
		msgID = fmt.Sprintf("raw-seq:%d", meta.Sequence.Stream)
	}
	return event.OrgFromSubject(m.Subject()), msgID, false
}

// redriveOf returns the rejected-stream sequence m redrives, or "".
func redriveOf(m jetstream.Msg) string {
	seq := m.Headers().Get(event.HeaderRedriveOf)
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return ""
	}
	return seq
}

func copyRedrive(from jetstream.Msg, to *nats.Msg) {
	if seq := redriveOf(from); seq != "" {
		to.Header.Set(event.HeaderRedriveOf, seq)
		to.Header.Set(event.HeaderRedriveSchema, from.Headers().Get(event.HeaderRedriveSchema))
	}
}

// MaxReasonLen caps the reject-reason header.
const MaxReasonLen = 2048

// rejected builds the rejected-stream message of raw message m: its payload unchanged, with the
// reason and its category. Every reject the validator makes is input-side.
func rejected(m jetstream.Msg, org, msgID, category, reason string) *nats.Msg {
	if !event.ValidOrgID(org) {
		org = "_invalid"
	}
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	out := nats.NewMsg(event.RejectedSubject(org))
	out.Data = m.Data()
	out.Header.Set(event.HeaderRejectReason, strings.ReplaceAll(reason, "\n", " "))
	out.Header.Set(event.HeaderRejectCategory, category)
	out.Header.Set(event.HeaderRejectSide, event.SideInput)
	out.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRejected)
	if msgID != "" {
		out.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	copyRedrive(m, out)
	return out
}
