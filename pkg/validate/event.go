// Package validate checks what producers send before anything is published: the structure and
// limits of a WorkOS create-event body (this file) and, through the schema package, the action's
// schema. The gateway and the validator worker use this one package.
package validate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/logbookhq/logbook/pkg/event"
)

// Limits on an event's fields. The WorkOS metadata limits are documented by WorkOS; the others are
// Logbook's own (WorkOS documents none) and are listed in docs/api.md.
const (
	MaxMetadataKeys      = 50
	MaxMetadataKeyLen    = 40
	MaxMetadataValueLen  = 500
	MaxActionLen         = 128
	MaxIDLen             = 256
	MaxTypeLen           = 128
	MaxNameLen           = 512
	MaxLocationLen       = 256
	MaxUserAgentLen      = 1024
	MaxTargets           = 100
	MaxVersion           = 1 << 20
	MaxOccurredAtSkewFut = 24 * time.Hour
)

// ErrMalformed marks a body that is not one strict JSON object: not JSON, not an object, a
// duplicate member name, invalid UTF-8 (HTTP 400).
var ErrMalformed = errors.New("malformed JSON body")

// ErrIdempotencyKey marks a bulk line whose "idempotency_key" is not a string (HTTP 400).
var ErrIdempotencyKey = errors.New("idempotency_key must be a string")

// FieldError is one structural problem: the field's dotted path and a readable requirement.
// Code is readable on purpose: the Node SDK shows the codes as its exception message.
type FieldError struct {
	Field string `json:"field"`
	Code  string `json:"code"`
}

// FieldErrors is the set of structural problems of one body (HTTP 422).
type FieldErrors []FieldError

func (fe FieldErrors) Error() string {
	parts := make([]string, len(fe))
	for i, e := range fe {
		parts[i] = e.Code
	}
	return "validation failed: " + strings.Join(parts, "; ")
}

// CreateEvent is a parsed create-event request.
type CreateEvent struct {
	OrganizationID string
	Event          event.Event
}

// ParseCreateEvent decodes and checks a create-event body. It returns ErrMalformed (wrapped) for
// a body that is not one strict JSON object (see CheckJSON) and FieldErrors for every structural
// problem it finds. now is used to refuse events dated far in the future.
func ParseCreateEvent(body []byte, now time.Time) (*CreateEvent, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	return parseCreateEvent(obj, now)
}

// ParseBulkLine is ParseCreateEvent for one line of a bulk request, which may also carry the
// line's Idempotency-Key as "idempotency_key" (key is "" without one). A key that is not a string
// is ErrIdempotencyKey.
func ParseBulkLine(line []byte, now time.Time) (req *CreateEvent, key string, err error) {
	obj, err := decodeObject(line)
	if err != nil {
		return nil, "", err
	}
	if v, ok := obj["idempotency_key"]; ok {
		if key, ok = v.(string); !ok {
			return nil, "", ErrIdempotencyKey
		}
		delete(obj, "idempotency_key")
	}
	req, err = parseCreateEvent(obj, now)
	return req, key, err
}

func parseCreateEvent(obj map[string]any, now time.Time) (*CreateEvent, error) {
	c := &checker{}
	out := &CreateEvent{}
	c.allowOnly("", obj, "organization_id", "event")
	out.OrganizationID = c.str("organization_id", obj["organization_id"], true, 64)
	if out.OrganizationID != "" && !event.ValidOrgID(out.OrganizationID) {
		c.add("organization_id", "organization_id may contain only letters, digits, '_' and '-' (at most 64)")
	}
	if evObj, ok := c.object("event", obj["event"], true); ok {
		out.Event = c.event(evObj, now)
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return out, nil
}

type checker struct{ errs FieldErrors }

func (c *checker) add(field, code string) {
	c.errs = append(c.errs, FieldError{Field: field, Code: code})
}

func (c *checker) allowOnly(prefix string, obj map[string]any, keys ...string) {
	for k := range obj {
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known {
			c.add(prefix+k, prefix+k+" is not a known field")
		}
	}
}

// str checks an optional or required string; "" and null count as absent (the legacy Go SDK sends "").
func (c *checker) str(field string, v any, required bool, maxLen int) string {
	if v == nil {
		if required {
			c.add(field, field+" is required")
		}
		return ""
	}
	s, ok := v.(string)
	if !ok {
		c.add(field, field+" must be a string")
		return ""
	}
	switch {
	case s == "" && required:
		c.add(field, field+" is required")
	case !utf8.ValidString(s):
		c.add(field, field+" must be valid UTF-8")
	case utf8.RuneCountInString(s) > maxLen:
		c.add(field, fmt.Sprintf("%s must be at most %d characters", field, maxLen))
	}
	return s
}

func (c *checker) object(field string, v any, required bool) (map[string]any, bool) {
	if v == nil {
		if required {
			c.add(field, field+" is required")
		}
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		c.add(field, field+" must be an object")
	}
	return m, ok
}

func (c *checker) event(obj map[string]any, now time.Time) event.Event {
	var ev event.Event
	c.allowOnly("event.", obj, "action", "occurred_at", "version", "actor", "targets", "context", "metadata")
	ev.Action = c.str("event.action", obj["action"], true, MaxActionLen)
	if ev.Action != "" && !event.IsDottedWords(ev.Action) {
		c.add("event.action", "event.action must be dot-separated words of letters, digits, '_' and '-'")
	}
	if s := c.str("event.occurred_at", obj["occurred_at"], true, 64); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		switch {
		case err != nil:
			c.add("event.occurred_at", "event.occurred_at must be an ISO 8601 date string")
		case t.After(now.Add(MaxOccurredAtSkewFut)):
			c.add("event.occurred_at", "event.occurred_at must not be more than 24 hours in the future")
		case t.Year() < 1970:
			c.add("event.occurred_at", "event.occurred_at must not be before 1970")
		default:
			ev.OccurredAt = t.UTC().Truncate(time.Millisecond)
		}
	}
	if v, ok := obj["version"]; ok && v != nil {
		n, isNum := v.(json.Number)
		i, err := n.Int64()
		if !isNum || err != nil || i < 1 || i > MaxVersion {
			c.add("event.version", "event.version must be a positive integer")
		} else {
			ev.Version = int(i)
		}
	}
	if a, ok := c.object("event.actor", obj["actor"], true); ok {
		ev.Actor = c.entity("event.actor", a)
	}
	switch t := obj["targets"].(type) {
	case nil: // the legacy Go SDK sends null for no targets
		ev.Targets = []event.Entity{}
	case []any:
		if len(t) > MaxTargets {
			c.add("event.targets", fmt.Sprintf("event.targets must have at most %d items", MaxTargets))
			break
		}
		ev.Targets = make([]event.Entity, 0, len(t))
		for i, item := range t {
			field := fmt.Sprintf("event.targets[%d]", i)
			if o, ok := c.object(field, item, true); ok {
				ev.Targets = append(ev.Targets, c.entity(field, o))
			}
		}
	default:
		c.add("event.targets", "event.targets must be an array")
	}
	if ctxObj, ok := c.object("event.context", obj["context"], true); ok {
		c.allowOnly("event.context.", ctxObj, "location", "user_agent")
		ev.Context.Location = c.str("event.context.location", ctxObj["location"], true, MaxLocationLen)
		ev.Context.UserAgent = c.str("event.context.user_agent", ctxObj["user_agent"], false, MaxUserAgentLen)
	}
	ev.Metadata = c.metadata("event.metadata", obj["metadata"])
	return ev
}

func (c *checker) entity(field string, obj map[string]any) event.Entity {
	c.allowOnly(field+".", obj, "id", "type", "name", "metadata")
	return event.Entity{
		ID:       c.str(field+".id", obj["id"], true, MaxIDLen),
		Type:     c.str(field+".type", obj["type"], true, MaxTypeLen),
		Name:     c.str(field+".name", obj["name"], false, MaxNameLen),
		Metadata: c.metadata(field+".metadata", obj["metadata"]),
	}
}

// metadata enforces the WorkOS limits: at most 50 keys of at most 40 characters, values that are
// strings of at most 500 characters, numbers or booleans; nothing nested.
func (c *checker) metadata(field string, v any) map[string]any {
	m, ok := c.object(field, v, false)
	if !ok {
		return nil
	}
	if len(m) > MaxMetadataKeys {
		c.add(field, fmt.Sprintf("%s must have at most %d keys", field, MaxMetadataKeys))
		return nil
	}
	for k, val := range m {
		if !event.IsWord(k, MaxMetadataKeyLen) {
			c.add(field, fmt.Sprintf("%s keys must be 1 to %d letters, digits, '_' or '-' (got %q)", field, MaxMetadataKeyLen, truncate(k, 50)))
			continue
		}
		switch x := val.(type) {
		case string:
			if utf8.RuneCountInString(x) > MaxMetadataValueLen {
				c.add(field+"."+k, fmt.Sprintf("%s.%s must be at most %d characters", field, k, MaxMetadataValueLen))
			}
		case json.Number, bool:
		default:
			c.add(field+"."+k, fmt.Sprintf("%s.%s must be a string, number or boolean", field, k))
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ValidAction reports whether name is an acceptable action name.
func ValidAction(name string) bool {
	return len(name) <= MaxActionLen && event.IsDottedWords(name)
}

// ParseRecord decodes a record read from the raw stream (which other paths than the gateway may
// have written) and re-applies the structural checks in the same pass. Future-dated events are
// judged against the record's receive time. Errors are ErrMalformed or FieldErrors, as for
// ParseCreateEvent.
func ParseRecord(data []byte) (*event.Record, error) {
	obj, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	c := &checker{}
	c.allowOnly("", obj, "id", "organization_id", "received_at", "event", "schema")
	rec := &event.Record{
		ID:             c.str("id", obj["id"], true, MaxIDLen),
		OrganizationID: c.str("organization_id", obj["organization_id"], true, 64),
	}
	if rec.OrganizationID != "" && !event.ValidOrgID(rec.OrganizationID) {
		c.add("organization_id", "organization_id may contain only letters, digits, '_' and '-' (at most 64)")
	}
	if s := c.str("received_at", obj["received_at"], true, 64); s != "" {
		if rec.ReceivedAt, err = time.Parse(time.RFC3339Nano, s); err != nil {
			c.add("received_at", "received_at must be an RFC 3339 time")
		}
	}
	if evObj, ok := c.object("event", obj["event"], true); ok {
		rec.Event = c.event(evObj, rec.ReceivedAt)
	}
	if ref, ok := c.object("schema", obj["schema"], false); ok {
		rec.Schema = c.schemaRef(ref)
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return rec, nil
}

// schemaRef checks the schema version a record was accepted under: {"scope":"none"} or
// {"scope":"org"|"env","version":n}.
func (c *checker) schemaRef(obj map[string]any) *event.SchemaRef {
	c.allowOnly("schema.", obj, "scope", "version")
	ref := &event.SchemaRef{Scope: c.str("schema.scope", obj["scope"], true, 8)}
	n, _ := obj["version"].(json.Number)
	v, err := n.Int64()
	switch {
	case ref.Scope == event.SchemaNone && obj["version"] == nil:
	case ref.Scope != event.SchemaOrg && ref.Scope != event.SchemaEnv:
		c.add("schema", "schema must be {\"scope\":\"none\"} or name an org or env scope and a version")
	case err != nil || v < 1 || v > MaxVersion:
		c.add("schema.version", "schema.version must be a positive integer")
	default:
		ref.Version = int(v)
	}
	return ref
}
