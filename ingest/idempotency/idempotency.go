// Package idempotency remembers the Idempotency-Keys of create-event requests for 24 hours (the
// WorkOS promise; JetStream's own duplicate window is minutes), in the JetStream key-value bucket
// logbook_idempotency. Each record holds a digest of the request, the event id the first attempt
// minted and whether its publish was acknowledged, so a repeat is answered without publishing
// again and a reused key with another body is refused.
//
// Every create-event request from the Node and Go SDKs carries a key, and JetStream here fsyncs each
// write, so records are written through a natsx.GroupCommit on the bucket's stream: concurrent
// requests share one disk sync. Reads are direct gets.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// States of a record.
const (
	// Pending: the key was claimed and the event is being published (or the attempt died).
	Pending = "pending"
	// Done: the event was stored; a repeat is answered without publishing.
	Done = "done"
)

// Record is what the bucket holds for one key.
type Record struct {
	// Digest is the SHA-256 of the request (organization and event), hex.
	Digest string `json:"digest"`
	// EventID and ReceivedAtMs are the identity the first attempt gave the event; a repeat of a
	// pending attempt publishes the same record again, byte for byte, so every hop deduplicates it.
	EventID      string `json:"event_id"`
	ReceivedAtMs int64  `json:"received_at_ms"`
	State        string `json:"state"`
}

// Store reads and writes records. Safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue
	gc *natsx.GroupCommit
}

// Open opens the bucket (natsx.EnsureBuckets creates it) and starts the group committer on its
// stream. Close stops it.
func Open(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, event.BucketIdempotency)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketIdempotency, err)
	}
	gc := natsx.NewGroupCommit(nc, js, natsx.KVStream(event.BucketIdempotency), natsx.DefaultGroupConfig())
	return &Store{kv: kv, gc: gc}, nil
}

// Close stops the group committer after the writes in flight.
func (s *Store) Close() { s.gc.Close() }

// Key is the bucket key of an Idempotency-Key: keys are scoped to the organization, like the raw
// stream's message id (event.RawMsgID), and hashed, so any header value makes a valid key.
func Key(org, idempotencyKey string) string {
	sum := sha256.Sum256([]byte(org + "\x00" + idempotencyKey))
	return hex.EncodeToString(sum[:20])
}

// Digest is the digest of a request: its organization and the event as Logbook parsed it (so key
// order and white space do not matter).
func Digest(org string, ev *event.Event) (string, error) {
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

// Claim stores rec (state Pending) under key unless the key is taken. It returns nil when rec was
// stored, and the record already there otherwise. The create is tried first (a repeat is the rare
// case, so no read is spent on the common one); only when it fails is the record read.
func (s *Store) Claim(ctx context.Context, key string, rec Record) (existing *Record, err error) {
	rec.State = Pending
	err = s.write(ctx, key, rec, true)
	if err == nil {
		return nil, nil
	}
	// Lost a race with a concurrent attempt: its record is the one that counts.
	if existing, gerr := s.get(ctx, key); gerr == nil && existing != nil {
		return existing, nil
	}
	return nil, err
}

// Done marks key's event as stored.
func (s *Store) Done(ctx context.Context, key string, rec Record) error {
	rec.State = Done
	return s.write(ctx, key, rec, false)
}

func (s *Store) get(ctx context.Context, key string) (*Record, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read idempotency key: %w", err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("failed to decode idempotency record: %w", err)
	}
	return &r, nil
}

func (s *Store) write(ctx context.Context, key string, rec Record, create bool) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("failed to encode idempotency record: %w", err)
	}
	m := nats.NewMsg(natsx.KVSubject(event.BucketIdempotency, key))
	m.Data = raw
	if create {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.Itoa(0))
	}
	if err := s.gc.Publish(ctx, m); err != nil {
		return fmt.Errorf("failed to store idempotency record: %w", err)
	}
	return nil
}
