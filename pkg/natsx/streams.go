// Package natsx holds Logbook's NATS wiring: connecting (over TCP or in-process), the embedded
// server of the single-process mode, and the streams and buckets every service relies on.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

// errCodeInsufficientStorage is JetStream's "insufficient storage resources available".
const errCodeInsufficientStorage = 10047

// StreamLimits are the operator-tunable limits of Logbook's streams.
//
// No stream has a max age: under limits retention JetStream deletes a message at its max age
// whether or not anything consumed it, so an outage of the writer longer than the max age would
// silently delete acknowledged events. Instead a Trimmer removes from the raw and valid streams
// only what every durable consumer has settled and is older than Keep; the byte cap is the only
// limit on what is not settled (a full raw stream answers 503 at intake, never a deletion).
type StreamLimits struct {
	// MaxBytes caps each stream's size. When the raw stream is full, new events are refused
	// (Discard: New) and the gateway answers 503; nothing already stored is dropped. Default 2 GiB.
	// Settled messages stay for Keep, so size it for Keep of traffic plus the longest backlog to
	// ride out: at about 700 bytes an event, 2 GiB holds about 3 million events, a day at 35
	// events/s on average. JetStream reserves the cap of every stream on disk when it creates them.
	MaxBytes int64
	// Keep is how long the raw and valid streams keep a message, counted from when it was stored,
	// once every durable consumer has settled it: so a batch can be re-read and re-driven (the
	// writer's batch ledger keeps 6 hours), reconciled, and an Idempotency-Key answered. A message
	// not yet settled stays however old it is. Must exceed Duplicates and be at least
	// IdempotencyWindow. Default 24 hours. The rejected stream keeps its dead letters until
	// deliberately removed.
	Keep time.Duration
	// IdempotencyWindow is how long an Idempotency-Key is honoured (the WorkOS promise): the raw
	// stream's messages are its record, so Keep may not be shorter. Default IdempotencyTTL (24 h);
	// shorter only in tests.
	IdempotencyWindow time.Duration
	// Duplicates is JetStream's message-id dedup window of the valid and rejected streams, and of
	// the raw stream up to RawDuplicates. Default 10 minutes. JetStream holds every id of the
	// window in memory (about 170 bytes each): at 10,000 events/s a 10-minute window holds 6
	// million ids per stream, 1 GiB of live heap. A shorter window on the outputs stays
	// exactly-once (validator/worker/republish.go) but makes the validator scan the outputs for
	// every redelivered message older than it: measured, a 2-minute window stalled validation of
	// a backlog on a loaded machine (see docs/design.md, Memory).
	Duplicates time.Duration
	// Replicas is the stream replica count: 1 embedded, 3 in a cluster. Default 1.
	Replicas int
}

// DefaultStreamLimits returns the defaults documented on StreamLimits.
func DefaultStreamLimits() StreamLimits {
	return StreamLimits{
		MaxBytes: 2 << 30, Keep: 24 * time.Hour, IdempotencyWindow: IdempotencyTTL,
		Duplicates: 10 * time.Minute, Replicas: 1,
	}
}

// Validate reports limits that would break the durability promises, naming the variables.
func (l StreamLimits) Validate() error {
	switch {
	case l.MaxBytes <= 0:
		return errors.New("LOGBOOK_STREAM_MAX_BYTES must be positive")
	case l.Duplicates <= 0:
		return errors.New("LOGBOOK_STREAM_DUPLICATES must be positive")
	case l.IdempotencyWindow <= 0:
		return errors.New("LOGBOOK_IDEMPOTENCY_WINDOW must be positive")
	case l.Keep <= l.Duplicates:
		return fmt.Errorf("LOGBOOK_STREAM_KEEP (%s) must exceed LOGBOOK_STREAM_DUPLICATES (%s)", l.Keep, l.Duplicates)
	case l.Keep < l.IdempotencyWindow:
		return fmt.Errorf("LOGBOOK_STREAM_KEEP (%s) may not be shorter than the idempotency window (%s): "+
			"the raw stream is the record of Idempotency-Keys", l.Keep, l.IdempotencyWindow)
	case l.Replicas < 1 || l.Replicas > 5:
		return errors.New("LOGBOOK_STREAM_REPLICAS must be between 1 and 5")
	}
	return nil
}

// KeepMetadata is the stream metadata key holding a stream's keep time (a Go duration, see
// StreamLimits.Keep). A Trimmer trims only streams that carry it: the raw and valid streams.
const KeepMetadata = "logbook.keep"

// trimmed reports whether Logbook trims stream (settled and older than its keep time).
func trimmed(stream string) bool { return stream == event.StreamRaw || stream == event.StreamValid }

// RawDuplicates caps the raw stream's dedup window. On the raw stream a message id only has to
// catch the gateway's re-send of a publish whose answer it did not get (within its publish
// timeout, 10 s, and the group committer's one-by-one re-send), a self-audit record written again
// at once, and the redrive of a rejected event (which its expected subject sequence settles
// anyway); an Idempotency-Key is kept by its subject for 24 hours, not by this window. A raw
// message repeated later still meets the valid stream's full window, keyed by the event id. The
// shorter window keeps the raw stream's ids out of memory: at bulk rates they were the larger
// half of the process's heap.
const RawDuplicates = 2 * time.Minute

// StreamConfigs returns the configuration of the raw, valid and rejected streams.
func StreamConfigs(l StreamLimits) []jetstream.StreamConfig {
	base := func(name, subjects, desc string) jetstream.StreamConfig {
		c := jetstream.StreamConfig{
			Name:               name,
			Description:        desc,
			Subjects:           []string{subjects},
			Retention:          jetstream.LimitsPolicy, // never WorkQueue or Interest: dedup of acked messages must survive restarts
			Storage:            jetstream.FileStorage,
			Discard:            jetstream.DiscardNew, // a full stream refuses new events instead of deleting old ones
			MaxBytes:           l.MaxBytes,
			MaxAge:             0, // never: JetStream would delete unconsumed events at that age
			Duplicates:         l.Duplicates,
			Replicas:           l.Replicas,
			DenyDelete:         true,
			DenyPurge:          true,
			AllowAtomicPublish: true,
		}
		if name == event.StreamRaw {
			c.Duplicates = min(l.Duplicates, RawDuplicates)
		}
		if trimmed(name) {
			// The Trimmer removes what is settled and older than Keep, with sequence-bounded purges.
			c.DenyPurge = false
			c.Metadata = map[string]string{KeepMetadata: l.Keep.String()}
		}
		return c
	}
	return []jetstream.StreamConfig{
		base(event.StreamRaw, event.RawSubjects, "Audit events as accepted by the gateway"),
		base(event.StreamValid, event.ValidSubjects, "Audit events that passed validation"),
		base(event.StreamRejected, event.RejectedSubjects, "Audit events the validator refused (dead letters)"),
	}
}

// EnsureStreams creates or updates Logbook's streams and then reads each live configuration back,
// failing if any durability setting differs from what Logbook needs. A stream created by an older
// Logbook is updated in place: its max age is removed (so nothing unsettled expires any more) and
// its keep time set. JetStream cannot lift deny-purge on an existing stream, so an old raw or
// valid stream keeps denying purges: nothing in it is lost, but the Trimmer cannot trim it (it
// says so in the log); docs/design.md tells how to recreate it.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, l StreamLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	for _, cfg := range StreamConfigs(l) {
		if s, err := js.Stream(ctx, cfg.Name); err == nil && s.CachedInfo().Config.DenyPurge {
			cfg.DenyPurge = true // cannot be lifted by an update
		}
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeInsufficientStorage {
			return fmt.Errorf("failed to create stream %s: JetStream cannot reserve %d bytes for it on disk "+
				"(LOGBOOK_STREAM_MAX_BYTES is reserved for each of the three streams): lower it or free disk space: %w",
				cfg.Name, cfg.MaxBytes, err)
		}
		if err != nil {
			return fmt.Errorf("failed to create stream %s: %w", cfg.Name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("failed to read stream %s: %w", cfg.Name, err)
		}
		if err := CheckStream(info.Config); err != nil {
			return err
		}
	}
	return nil
}

// CheckStream reports the first setting of a live stream configuration that would let an
// acknowledged event be lost or deleted. Purges are allowed on the raw and valid streams only
// (the Trimmer's sequence-bounded purges of what is settled), which must then carry their keep time.
func CheckStream(c jetstream.StreamConfig) error {
	bad := func(what string) error { return fmt.Errorf("stream %s: %s", c.Name, what) }
	switch {
	case c.Retention != jetstream.LimitsPolicy:
		return bad("retention must be limits, not " + c.Retention.String())
	case c.Storage != jetstream.FileStorage:
		return bad("storage must be file")
	case c.Discard != jetstream.DiscardNew:
		return bad("discard policy must be new")
	case c.MaxBytes <= 0:
		return bad("max bytes must be capped")
	case c.MaxAge != 0:
		return bad("max age must be unset: JetStream deletes messages at that age whether or not they were consumed")
	case c.MaxMsgsPerSubject > 0:
		return bad("a per-subject message limit would delete a subject's older messages")
	case c.AllowMsgTTL:
		return bad("per-message TTLs must be off")
	case c.Duplicates <= 0:
		return bad("duplicate window must be set")
	case !c.DenyDelete:
		return bad("message deletes must be denied")
	case !c.DenyPurge && !trimmed(c.Name):
		return bad("purges must be denied")
	}
	if trimmed(c.Name) {
		keep, err := time.ParseDuration(c.Metadata[KeepMetadata])
		if err != nil || keep <= c.Duplicates {
			return bad(fmt.Sprintf("metadata %s=%q must be a keep time longer than the duplicate window",
				KeepMetadata, c.Metadata[KeepMetadata]))
		}
	}
	return nil
}

// Bucket lifetimes.
const (
	// IdempotencyTTL is how long an Idempotency-Key is honoured (the WorkOS promise), the default
	// of StreamLimits.IdempotencyWindow. A keyed event's raw message is the key's record
	// (event.RawKeySubject), so the raw stream keeps every message at least this long.
	IdempotencyTTL = 24 * time.Hour
	// ExportTTL is how long an export job and its file are kept.
	ExportTTL = 7 * 24 * time.Hour
	// ValidatorAttemptsTTL bounds how long a validator's isolation marker outlives a message settled
	// elsewhere (markers are normally deleted as soon as the record is decided).
	ValidatorAttemptsTTL = 7 * 24 * time.Hour
)

// EnsureBuckets creates the key-value buckets and the object store Logbook uses, file-backed:
// schemas, API keys, retention settings, secrets and redrive markers (kept until deleted),
// validator isolation markers (ValidatorAttemptsTTL), and export jobs and files (ExportTTL).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, c := range []jetstream.KeyValueConfig{
		{Bucket: event.BucketSchemas},
		{Bucket: event.BucketAPIKeys},
		{Bucket: event.BucketRetention},
		{Bucket: event.BucketSecrets},
		{Bucket: event.BucketExports, TTL: ExportTTL},
		{Bucket: event.BucketValidatorAttempts, TTL: ValidatorAttemptsTTL},
		{Bucket: event.BucketRedrives},
	} {
		c.Storage, c.Replicas, c.History = jetstream.FileStorage, replicas, 1
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return fmt.Errorf("failed to create bucket %s: %w", c.Bucket, err)
		}
	}
	_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      event.ObjectsExports,
		Description: "Finished audit log exports (CSV)",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		TTL:         ExportTTL,
	})
	if err != nil {
		return fmt.Errorf("failed to create object store %s: %w", event.ObjectsExports, err)
	}
	return nil
}

// KVStream is the name of the stream behind a key-value bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject is the subject a key-value bucket stores key under.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// Prepare creates or checks everything Logbook keeps in JetStream: the streams and the buckets.
//
// Processes started together on a fresh cluster create them at once, and JetStream answers none
// of the concurrent creates of one stream (measured with three nodes of nats-server 2.15.3: every
// request waited out its deadline, however long). So each attempt has its own deadline
// (prepareAttemptTimeout), and one that runs out is made again after a random pause of up to
// two seconds, so that one process creates each stream alone and the others find it; at most
// prepareAttempts attempts.
func Prepare(ctx context.Context, js jetstream.JetStream, l StreamLimits) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, prepareAttemptTimeout)
		err := EnsureStreams(actx, js, l)
		if err == nil {
			err = EnsureBuckets(actx, js, l.Replicas)
		}
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || attempt == prepareAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(rand.N(2 * time.Second)):
		}
	}
}

// One attempt of Prepare takes about a second on a healthy cluster.
const (
	prepareAttemptTimeout = 10 * time.Second
	prepareAttempts       = 8
)

// LimitsFromEnv reads LOGBOOK_STREAM_MAX_BYTES, LOGBOOK_STREAM_KEEP (LOGBOOK_STREAM_MAX_AGE, its
// old name, is read when it is unset), LOGBOOK_IDEMPOTENCY_WINDOW, LOGBOOK_STREAM_DUPLICATES and
// LOGBOOK_STREAM_REPLICAS over the defaults.
func LimitsFromEnv(env *config.Env) StreamLimits {
	d := DefaultStreamLimits()
	keep := env.Duration("LOGBOOK_STREAM_MAX_AGE", d.Keep) // the old name: streams no longer expire unsettled events
	return StreamLimits{
		MaxBytes:          env.Int("LOGBOOK_STREAM_MAX_BYTES", d.MaxBytes, 1<<20, 1<<50),
		Keep:              env.Duration("LOGBOOK_STREAM_KEEP", keep),
		IdempotencyWindow: env.Duration("LOGBOOK_IDEMPOTENCY_WINDOW", d.IdempotencyWindow),
		Duplicates:        env.Duration("LOGBOOK_STREAM_DUPLICATES", d.Duplicates),
		Replicas:          int(env.Int("LOGBOOK_STREAM_REPLICAS", int64(d.Replicas), 1, 5)),
	}
}
