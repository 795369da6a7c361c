// Package natsx holds Logbook's NATS wiring: connecting (over TCP or in-process), the embedded
// server of the single-process mode, and the streams and buckets every service relies on.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

// errCodeInsufficientStorage is JetStream's "insufficient storage resources available".
const errCodeInsufficientStorage = 10047

// StreamLimits are the operator-tunable limits of Logbook's streams.
type StreamLimits struct {
	// MaxBytes caps each stream's size. When the raw stream is full, new events are refused
	// (Discard: New) and the gateway answers 503; nothing already stored is dropped. Default 2 GiB.
	// Consumed messages stay until MaxAge, so size it for MaxAge of traffic: at about 700 bytes an
	// event, 2 GiB holds about 3 million events, a day at 35 events/s on average. JetStream reserves
	// the cap of every stream on disk when it creates them.
	MaxBytes int64
	// MaxAge is how long messages stay in the streams after they were consumed, so a batch can be
	// re-read and re-driven (the writer's batch ledger keeps 6 hours) and reconciled. Default 24 hours.
	// Must exceed Duplicates. ClickHouse, not the streams, is the record.
	MaxAge time.Duration
	// Duplicates is JetStream's message-id dedup window. Default 10 minutes.
	Duplicates time.Duration
	// Replicas is the stream replica count: 1 embedded, 3 in a cluster. Default 1.
	Replicas int
}

// DefaultStreamLimits returns the defaults documented on StreamLimits.
func DefaultStreamLimits() StreamLimits {
	return StreamLimits{MaxBytes: 2 << 30, MaxAge: 24 * time.Hour, Duplicates: 10 * time.Minute, Replicas: 1}
}

// Validate reports limits that would break the durability promises.
func (l StreamLimits) Validate() error {
	switch {
	case l.MaxBytes <= 0:
		return errors.New("stream max bytes must be positive")
	case l.Duplicates <= 0:
		return errors.New("stream duplicate window must be positive")
	case l.MaxAge <= l.Duplicates:
		return errors.New("stream max age must exceed the duplicate window")
	case l.Replicas < 1 || l.Replicas > 5:
		return errors.New("stream replicas must be between 1 and 5")
	}
	return nil
}

// StreamConfigs returns the configuration of the raw, valid and rejected streams.
func StreamConfigs(l StreamLimits) []jetstream.StreamConfig {
	base := func(name, subjects, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:               name,
			Description:        desc,
			Subjects:           []string{subjects},
			Retention:          jetstream.LimitsPolicy, // never WorkQueue: dedup of acked messages must survive restarts
			Storage:            jetstream.FileStorage,
			Discard:            jetstream.DiscardNew, // a full stream refuses new events instead of deleting old ones
			MaxBytes:           l.MaxBytes,
			MaxAge:             l.MaxAge,
			Duplicates:         l.Duplicates,
			Replicas:           l.Replicas,
			DenyDelete:         true,
			DenyPurge:          true,
			AllowAtomicPublish: true,
		}
	}
	return []jetstream.StreamConfig{
		base(event.StreamRaw, event.RawSubjects, "Audit events as accepted by the gateway"),
		base(event.StreamValid, event.ValidSubjects, "Audit events that passed validation"),
		base(event.StreamRejected, event.RejectedSubjects, "Audit events the validator refused (dead letters)"),
	}
}

// EnsureStreams creates or updates Logbook's streams and then reads each live configuration back,
// failing if any durability setting differs from what Logbook needs.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, l StreamLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	for _, cfg := range StreamConfigs(l) {
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
// acknowledged event be lost or deleted.
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
	case c.Duplicates <= 0:
		return bad("duplicate window must be set")
	case !c.DenyDelete || !c.DenyPurge:
		return bad("delete and purge must be denied")
	}
	return nil
}

// Bucket lifetimes.
const (
	// IdempotencyTTL is how long an Idempotency-Key is remembered (the WorkOS promise).
	IdempotencyTTL = 24 * time.Hour
	// ExportTTL is how long an export job and its file are kept.
	ExportTTL = 7 * 24 * time.Hour
	// ValidatorAttemptsTTL bounds how long a validator's isolation marker outlives a message settled
	// elsewhere (markers are normally deleted as soon as the record is decided).
	ValidatorAttemptsTTL = 7 * 24 * time.Hour
)

// EnsureBuckets creates the key-value buckets and the object store Logbook uses, file-backed:
// schemas, API keys, retention settings, secrets and redrive markers (kept until deleted),
// Idempotency-Keys (24 h, written through group commit, so atomic publish is enabled on its stream),
// validator isolation markers (ValidatorAttemptsTTL), and export jobs and files (ExportTTL).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, c := range []jetstream.KeyValueConfig{
		{Bucket: event.BucketSchemas},
		{Bucket: event.BucketAPIKeys},
		{Bucket: event.BucketRetention},
		{Bucket: event.BucketSecrets},
		{Bucket: event.BucketIdempotency, TTL: IdempotencyTTL},
		{Bucket: event.BucketExports, TTL: ExportTTL},
		{Bucket: event.BucketValidatorAttempts, TTL: ValidatorAttemptsTTL},
		{Bucket: event.BucketRedrives},
	} {
		c.Storage, c.Replicas, c.History = jetstream.FileStorage, replicas, 1
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return fmt.Errorf("failed to create bucket %s: %w", c.Bucket, err)
		}
	}
	if err := allowAtomicPublish(ctx, js, KVStream(event.BucketIdempotency)); err != nil {
		return err
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

// allowAtomicPublish turns on atomic batch publishing on an existing stream (a key-value bucket's
// stream is created without it), so a GroupCommit can write to it.
func allowAtomicPublish(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return nil
	}
	cfg.AllowAtomicPublish = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("failed to allow atomic publish on %s: %w", stream, err)
	}
	return nil
}

// Prepare creates or checks everything Logbook keeps in JetStream: the streams and the buckets.
func Prepare(ctx context.Context, js jetstream.JetStream, l StreamLimits) error {
	if err := EnsureStreams(ctx, js, l); err != nil {
		return err
	}
	return EnsureBuckets(ctx, js, l.Replicas)
}

// LimitsFromEnv reads LOGBOOK_STREAM_MAX_BYTES, LOGBOOK_STREAM_MAX_AGE, LOGBOOK_STREAM_DUPLICATES
// and LOGBOOK_STREAM_REPLICAS over the defaults.
func LimitsFromEnv(env *config.Env) StreamLimits {
	d := DefaultStreamLimits()
	return StreamLimits{
		MaxBytes:   env.Int("LOGBOOK_STREAM_MAX_BYTES", d.MaxBytes, 1<<20, 1<<50),
		MaxAge:     env.Duration("LOGBOOK_STREAM_MAX_AGE", d.MaxAge),
		Duplicates: env.Duration("LOGBOOK_STREAM_DUPLICATES", d.Duplicates),
		Replicas:   int(env.Int("LOGBOOK_STREAM_REPLICAS", int64(d.Replicas), 1, 5)),
	}
}
