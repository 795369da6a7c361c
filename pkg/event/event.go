// Package event defines the audit event as it travels through Logbook: the WorkOS-shaped event a
// producer sends, the Record the gateway wraps it in (identity and receive time), and the JetStream
// stream and subject names the services share.
package event

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Entity is an actor or a target of an event.
type Entity struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Name     string         `json:"name,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// Context is where an event came from.
type Context struct {
	Location  string `json:"location"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Event is the body of a WorkOS create-event request's "event" field, after structural validation.
// Metadata values are strings, booleans or json.Number (numbers keep the digits the producer sent).
type Event struct {
	Action     string         `json:"action"`
	OccurredAt time.Time      `json:"occurred_at"`
	Version    int            `json:"version,omitempty"`
	Actor      Entity         `json:"actor"`
	Targets    []Entity       `json:"targets"`
	Context    Context        `json:"context"`
	Metadata   map[string]any `json:"metadata,omitempty"`
}

// Record is what the gateway publishes and every later hop passes on unchanged: the event with the
// identity the gateway gave it. Nothing downstream of the gateway changes a Record.
type Record struct {
	// ID is the event id, a ULID minted by the gateway ("evt_" is not prefixed; the API adds nothing).
	ID string `json:"id"`
	// OrganizationID is checked against OrgIDPattern before the record exists.
	OrganizationID string `json:"organization_id"`
	// ReceivedAt is when the gateway accepted the event, in UTC, millisecond precision.
	ReceivedAt time.Time `json:"received_at"`
	Event      Event     `json:"event"`
	// Schema is the schema version the gateway accepted the event under; the validator checks
	// the event against exactly that version. Nil in records written before it existed (and by
	// other paths into the raw stream): the validator then resolves the schema itself.
	Schema *SchemaRef `json:"schema,omitempty"`
}

// Scopes of a SchemaRef.
const (
	// SchemaNone: the action had no schema, in the organization or the environment.
	SchemaNone = "none"
	// SchemaEnv: the environment's schema of the action.
	SchemaEnv = "env"
	// SchemaOrg: the organization's own schema of the action.
	SchemaOrg = "org"
)

// SchemaRef names one schema version: the organization's own or the environment's version of the
// event's action, or none. Versions are immutable, so a reference always means the same schema.
type SchemaRef struct {
	Scope   string `json:"scope"`
	Version int    `json:"version,omitempty"`
}

// Marshal encodes r as the JSON payload of a stream message.
func (r *Record) Marshal() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	return b, nil
}

// Unmarshal decodes a stream message payload, keeping metadata numbers as json.Number.
func Unmarshal(data []byte) (*Record, error) {
	var r Record
	if err := decodeUseNumber(data, &r); err != nil {
		return nil, fmt.Errorf("failed to decode event record: %w", err)
	}
	if r.ID == "" || !ValidOrgID(r.OrganizationID) {
		return nil, fmt.Errorf("failed to decode event record: missing id or bad organization id")
	}
	return &r, nil
}

// OrgIDPattern is what an organization id may look like. Organization ids become NATS subject
// tokens, so dots, wildcards and spaces are refused at the door.
var OrgIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidOrgID reports whether id matches OrgIDPattern. Every hop checks it (gateway, validator,
// writer), so it is a byte loop rather than the regular expression.
func ValidOrgID(id string) bool { return IsWord(id, 64) }

// IsWord reports whether s is 1 to max letters, digits, '_' or '-' (ASCII).
func IsWord(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !wordByte(s[i]) {
			return false
		}
	}
	return true
}

// IsDottedWords reports whether s is words (IsWord, any length) joined by single dots, as an
// action name is: `^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`.
func IsDottedWords(s string) bool {
	prev := byte('.') // at the start a dot is as wrong as after a dot
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if prev == '.' {
				return false
			}
		case !wordByte(c):
			return false
		}
		prev = c
	}
	return prev != '.'
}

func wordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// SelfAuditOrgID is the organization Logbook records its own administrative changes in (API keys
// created and revoked, schemas registered, retention changed, exports requested, viewer links
// issued). No producer may write into it through the API; only full-access keys read it.
const SelfAuditOrgID = "org_logbook"

// SelfAuditActionPrefix starts the actions of Logbook's own records ("logbook.retention.updated").
// Schemas for these actions are refused, so nobody can make the validator reject them.
const SelfAuditActionPrefix = "logbook."

// TimeFormat is how every timestamp leaves Logbook: UTC, three fractional digits, "Z".
const TimeFormat = "2006-01-02T15:04:05.000Z"

// FormatTime renders t in TimeFormat.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// MsgID is the JetStream message id of r on every hop, the raw publish included: the event's
// identity. (An Idempotency-Key is not a message id: a keyed event's raw subject is the key's
// record, see RawKeySubject.)
func (r *Record) MsgID() string { return r.OrganizationID + ":" + r.ID }

// MarshalJSON writes occurred_at in TimeFormat (three fractional digits, as the WorkOS SDKs expect).
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		OccurredAt string `json:"occurred_at"`
	}{plain(e), FormatTime(e.OccurredAt)})
}
