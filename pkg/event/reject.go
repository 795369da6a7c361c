package event

import "strings"

// Headers of rejected-stream messages and of redriven raw messages.
const (
	// HeaderRejectCategory names the kind of reason (one of the Reject* categories), so operators,
	// reconciliation and redrive can select rejects without parsing the reason text.
	HeaderRejectCategory = "Logbook-Reject-Category"
	// HeaderRejectSide says whose fault the reject was: SideInput (the record itself: undecodable,
	// invalid, refused by its schema or by ClickHouse, or crashing the validator) or SideOutput (a
	// failure downstream of the decision, such as a full stream; Logbook no longer dead-letters for
	// those, but records written by earlier versions may be).
	HeaderRejectSide = "Logbook-Reject-Side"
	// HeaderRedriveOf is set on a raw message put back through validation by a redrive: the
	// rejected-stream sequence of the message it redrives. The validator republishes such a record
	// under RedriveMsgID, and copies the header onto what it publishes.
	HeaderRedriveOf = "Logbook-Redrive-Of"
	// HeaderRedriveSchema is set with HeaderRedriveOf: which schema the redriven record is validated
	// against, RedriveSchemaPinned or RedriveSchemaCurrent.
	HeaderRedriveSchema = "Logbook-Redrive-Schema"
)

// Values of HeaderRedriveSchema.
const (
	// RedriveSchemaPinned validates a redriven record as the first time: against the schema version
	// the record names (the version the gateway accepted it under).
	RedriveSchemaPinned = "pinned"
	// RedriveSchemaCurrent validates a redriven record against the newest version of its action's
	// schema today (the organization's own when it has one, else the environment's): what an
	// operator who registered a corrected schema wants.
	RedriveSchemaCurrent = "current"
)

// Sides of a reject (HeaderRejectSide).
const (
	SideInput  = "input"
	SideOutput = "output"
)

// Reject categories (HeaderRejectCategory).
const (
	// RejectUndecodable: the payload is not a record (not JSON, no identity, a bad organization id).
	RejectUndecodable = "undecodable"
	// RejectInvalidRecord: a record that breaks the structural rules (pkg/validate).
	RejectInvalidRecord = "invalid_record"
	// RejectUnknownVersion: the event names a schema version its action does not have.
	RejectUnknownVersion = "unknown_schema_version"
	// RejectSchemaViolation: the event does not satisfy its action's schema.
	RejectSchemaViolation = "schema_violation"
	// RejectValidatorCrashed: validating the record panicked, or the process died validating it
	// alone several times.
	RejectValidatorCrashed = "validator_crashed"
	// RejectStoreRefused: ClickHouse refused the row as data (the writer's reject).
	RejectStoreRefused = "clickhouse_refused"
	// RejectDeliveryLimit: a record earlier versions gave up on after 20 deliveries, whatever the
	// cause: usually an output failure (a full or leaderless stream, schemas unreachable), so the
	// event was probably valid. Output side; redrive these.
	RejectDeliveryLimit = "delivery_limit"
	// RejectOther: a reason none of the above describes.
	RejectOther = "other"
)

// ClassifyReject returns the category and side of a rejected-stream message from its
// HeaderRejectCategory, HeaderRejectSide and HeaderRejectReason values. Messages written before the
// category header existed are classified by their reason text.
func ClassifyReject(category, side, reason string) (string, string) {
	if category == "" {
		category = categoryOf(reason)
	}
	if side != SideInput && side != SideOutput {
		side = SideInput
		if category == RejectDeliveryLimit {
			side = SideOutput
		}
	}
	return category, side
}

func categoryOf(reason string) string {
	switch {
	case strings.HasPrefix(reason, "undecodable record"), strings.HasPrefix(reason, "writer could not decode"):
		return RejectUndecodable
	case strings.HasPrefix(reason, "schema violation"):
		return RejectSchemaViolation
	case strings.HasPrefix(reason, "unknown schema version"):
		return RejectUnknownVersion
	case strings.HasPrefix(reason, "validation failed"):
		return RejectInvalidRecord
	case strings.HasPrefix(reason, "validator crashed"):
		return RejectValidatorCrashed
	case strings.HasPrefix(reason, "clickhouse refused the row"):
		return RejectStoreRefused
	case strings.HasPrefix(reason, "delivered ") && strings.Contains(reason, "without being settled"):
		return RejectDeliveryLimit
	}
	return RejectOther
}

// RedriveMsgID is the message id, on the valid and rejected streams, of record r put back through
// validation by a redrive of rejected-stream message seq. It differs from r.MsgID(), so an event the
// writer refused (whose first copy is in the valid stream under r.MsgID()) is not dropped by the
// valid stream's duplicate window, and each redrive is deduplicated on its own.
func (r *Record) RedriveMsgID(seq string) string { return r.MsgID() + ":redrive:" + seq }
