package event

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Stream and subject names. The third token of every subject is the organization id
// (logbook.<stage>.<org>, logbook.raw.<org>.k.<key digest> for an event sent with an
// Idempotency-Key, and logbook.raw.<org>.r.<rejected seq> for a redriven event), so consumers and
// operators can filter one organization's traffic; the id is restricted by OrgIDPattern.
const (
	// StreamRaw holds events as the gateway accepted them, before schema validation.
	StreamRaw = "LOGBOOK_RAW"
	// StreamValid holds events the validator accepted; the writer stores them.
	StreamValid = "LOGBOOK_VALID"
	// StreamRejected holds events the validator refused (dead letters), with the reason in headers.
	StreamRejected = "LOGBOOK_REJECTED"

	subjectRaw      = "logbook.raw."
	subjectValid    = "logbook.valid."
	subjectRejected = "logbook.rejected."

	// ConsumerValidator is the durable consumer on StreamRaw that validator replicas share.
	ConsumerValidator = "validator"
	// ConsumerWriter is the durable consumer on StreamValid that writer replicas share.
	ConsumerWriter = "writer"

	// BucketSchemas is the key-value bucket holding action schemas.
	BucketSchemas = "logbook_schemas"
	// BucketAPIKeys is the key-value bucket holding API key hashes.
	BucketAPIKeys = "logbook_api_keys"
	// BucketRetention is the key-value bucket holding each organization's retention setting.
	BucketRetention = "logbook_retention"
	// BucketExports is the key-value bucket holding export jobs and their state.
	BucketExports = "logbook_exports"
	// BucketSecrets is the key-value bucket holding secrets Logbook generates for itself (the key
	// that signs export download links).
	BucketSecrets = "logbook_secrets"
	// BucketValidatorAttempts is the key-value bucket where a validator marks a raw message it
	// validates alone after repeated deliveries, so a record the process keeps dying on is known.
	BucketValidatorAttempts = "logbook_validator_attempts"
	// BucketRedrives is the key-value bucket remembering, per event, which rejected message was put
	// back through validation, so a redrive happens once.
	BucketRedrives = "logbook_redrives"
	// ObjectsExports is the object store holding finished export files (CSV).
	ObjectsExports = "logbook_exports"

	// HeaderRejectReason carries why the validator refused an event (on StreamRejected messages).
	HeaderRejectReason = "Logbook-Reject-Reason"
	// HeaderRequestDigest carries the digest of the create-event request a keyed raw message was
	// published for (see RawKeySubject), so a repeat of the key can tell the same request from
	// another one.
	HeaderRequestDigest = "Logbook-Request-Digest"
)

// RawSubject is the subject an organization's raw events without an Idempotency-Key are
// published on.
func RawSubject(org string) string { return subjectRaw + org }

// RawKeySubject is the subject of org's raw event sent with Idempotency-Key key. It holds at most
// one message: the gateway publishes with an expected last subject sequence of 0, so the raw stream
// itself is the record of the key for as long as it keeps the message (at least 24 hours). The key
// enters the subject as a digest, so any header value makes a valid subject token.
func RawKeySubject(org, key string) string {
	sum := sha256.Sum256([]byte(key))
	return subjectRaw + org + ".k." + hex.EncodeToString(sum[:16])
}

// OrgFromSubject returns the organization token of a Logbook stream subject, or "" when subject
// has none.
func OrgFromSubject(subject string) string {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 3 || parts[0] != "logbook" {
		return ""
	}
	return parts[2]
}

// RawRedriveSubject is the raw subject of a rejected event put back through validation: one subject
// per rejected-stream message (seq), so JetStream itself refuses a second redrive of it while the raw
// stream holds the first (published with Nats-Expected-Last-Subject-Sequence: 0).
func RawRedriveSubject(org string, seq uint64) string {
	return subjectRaw + org + ".r." + strconv.FormatUint(seq, 10)
}

// ValidSubject is the subject an organization's validated events are published on.
func ValidSubject(org string) string { return subjectValid + org }

// RejectedSubject is the subject an organization's rejected events are published on.
func RejectedSubject(org string) string { return subjectRejected + org }

// RawSubjects, ValidSubjects and RejectedSubjects are the streams' subject filters.
const (
	RawSubjects      = subjectRaw + ">"
	ValidSubjects    = subjectValid + "*"
	RejectedSubjects = subjectRejected + "*"
)
