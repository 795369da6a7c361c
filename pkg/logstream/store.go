package logstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// Record is a stream as kept in Bucket: the configuration and its sealed secrets.
type Record struct {
	Stream
	Sealed string `json:"sealed_secrets,omitempty"`
}

// Health of a stream as its delivery worker reports it.
const (
	// HealthOK: the last attempt succeeded (or none was needed).
	HealthOK = "ok"
	// HealthRetrying: the destination failed recently; the batch is retried with backoff.
	HealthRetrying = "retrying"
	// HealthFailing: the destination has refused or been unreachable for longer than the failing
	// bound (LOGBOOK_LOG_STREAM_FAILING_AFTER); delivery is still retried.
	HealthFailing = "failing"
)

// Modes of delivery.
const (
	// ModeLive: delivering from the stream's durable consumer of LOGBOOK_VALID.
	ModeLive = "live"
	// ModeCatchUp: delivering from ClickHouse (a replay from before what the valid stream holds,
	// or a stream that was released), then handing over to a new durable consumer.
	ModeCatchUp = "catch_up"
)

// Status is what the delivery worker reports about a stream; the API shows it. Position fields
// are the worker's own: the API only creates the first status with the first consumer.
type Status struct {
	Health string `json:"health"`
	Mode   string `json:"mode"`
	// Consumer is the durable consumer of LOGBOOK_VALID holding the stream's position, "" while
	// the stream is released (in catch-up from ClickHouse with no consumer yet).
	Consumer string `json:"consumer,omitempty"`
	// Generation numbers consumers: each new position (replay, release, recovery) gets a new one.
	Generation int `json:"generation"`
	// CatchUpFrom is, in catch-up mode, the received time (and the id, for ties) of the next event
	// to read from ClickHouse: every event received at or after it is delivered.
	CatchUpFrom   *time.Time `json:"catch_up_from,omitempty"`
	CatchUpFromID string     `json:"catch_up_from_id,omitempty"`
	// Released says the stream gave up its hold on the valid stream (its lag passed the hold
	// bound or the valid stream filled): it catches up from ClickHouse once the destination
	// answers again.
	Released bool `json:"released,omitempty"`
	// Paused says the worker has seen the stream paused and delivers nothing (set within about a
	// second of a pause; delivery of a batch in hand finishes first).
	Paused bool `json:"paused,omitempty"`
	// LastError is the latest failure's description, LastErrorAt when it happened.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// FailingSince is when the current run of failures began; nil after a success.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// LastDeliveredAt is when a batch last succeeded; LastEventID the newest event delivered and
	// LastEventReceivedAt its received time.
	LastDeliveredAt     *time.Time `json:"last_delivered_at,omitempty"`
	LastEventID         string     `json:"last_event_id,omitempty"`
	LastEventReceivedAt *time.Time `json:"last_event_received_at,omitempty"`
	// Delivered counts events delivered (a redelivered batch counts again); FailedAttempts counts
	// attempts that failed.
	Delivered      uint64    `json:"delivered"`
	FailedAttempts uint64    `json:"failed_attempts"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Replay asks the worker to deliver again every event received at or after From.
type Replay struct {
	From        time.Time `json:"from"`
	RequestedAt time.Time `json:"requested_at"`
}

// ConsumerName is the durable consumer of generation gen of stream id.
func ConsumerName(id string, gen int) string {
	return fmt.Sprintf("%s_g%d", consumerPrefix(id), gen)
}

func consumerPrefix(id string) string { return "ls_" + strings.TrimPrefix(id, IDPrefix) }

// OwnsConsumer reports whether consumer name is one of stream id's generations.
func OwnsConsumer(id, name string) bool { return strings.HasPrefix(name, consumerPrefix(id)+"_g") }

// IDPrefix starts every stream id.
const IDPrefix = "log_stream_"

// AckWait is how long JetStream waits for a log-stream consumer's acknowledgement. The worker
// sends InProgress while a batch is retried, so it only matters after a crash.
const AckWait = 60 * time.Second

// Start is where a new consumer begins: after the newest message (zero), at a time, or at a
// stream sequence.
type Start struct {
	Time time.Time
	Seq  uint64
}

// ConsumerConfig is the durable consumer of s named name, starting at start. MaxAckPending is one
// batch: the worker holds one batch at a time, in order.
func ConsumerConfig(s *Stream, name string, start Start) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "Logbook log stream " + s.ID,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		MaxAckPending: s.Batch.WithDefaults(s.Destination.Type).MaxEvents,
		FilterSubject: s.Subject(),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		Metadata:      map[string]string{"logbook.log_stream": s.ID},
	}
	switch {
	case start.Seq > 0:
		c.DeliverPolicy, c.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start.Seq
	case !start.Time.IsZero():
		t := start.Time.UTC()
		c.DeliverPolicy, c.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	return c
}

// Store keeps streams in Bucket. Safe for concurrent use.
type Store struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	sealer *Sealer
}

// EnsureBucket creates Bucket (file storage, replicas copies).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int) error {
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Logbook log streams: configuration, status, replays, leases",
		Storage: jetstream.FileStorage, Replicas: replicas, History: 1,
	})
	if err != nil {
		return fmt.Errorf("failed to create bucket %s: %w", Bucket, err)
	}
	return nil
}

// Open returns the Store on js's Bucket (EnsureBucket first) with the sealing key of the secrets
// bucket.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", Bucket, err)
	}
	sealer, err := LoadSealer(ctx, js)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, js: js, sealer: sealer}, nil
}

// KV is the bucket (for watches and leases).
func (st *Store) KV() jetstream.KeyValue { return st.kv }

// Seal seals sec for stream id.
func (st *Store) Seal(id string, sec *Secrets) (string, error) { return st.sealer.Seal(id, sec) }

// Open opens r's secrets.
func (st *Store) Open(r *Record) (*Secrets, error) {
	var sec Secrets
	if err := st.sealer.Open(r.ID, r.Sealed, &sec); err != nil {
		return nil, err
	}
	return &sec, nil
}

// Create stores a new stream with its secrets and its first status, and creates its first
// consumer, delivering what arrives from now on (or from start). A consumer is created first, so a
// stream never exists without one.
func (st *Store) Create(ctx context.Context, s *Stream, sec *Secrets, start Start) error {
	sealed, err := st.Seal(s.ID, sec)
	if err != nil {
		return err
	}
	name := ConsumerName(s.ID, 1)
	if _, err := st.js.CreateConsumer(ctx, event.StreamValid, ConsumerConfig(s, name, start)); err != nil {
		return fmt.Errorf("failed to create consumer %s: %w", name, err)
	}
	status := Status{Health: HealthOK, Mode: ModeLive, Consumer: name, Generation: 1, UpdatedAt: s.CreatedAt}
	if _, err := st.put(ctx, PrefixStatus+s.ID, status, 0); err != nil {
		return err
	}
	if _, err := st.put(ctx, PrefixStream+s.ID, Record{Stream: *s, Sealed: sealed}, 0); err != nil {
		return err
	}
	return nil
}

// put stores v at key: created when rev is 0 (failing if it exists), else updated at revision rev.
func (st *Store) put(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("failed to encode %s: %w", key, err)
	}
	if rev == 0 {
		rev, err = st.kv.Create(ctx, key, b)
	} else {
		rev, err = st.kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("failed to store %s: %w", key, err)
	}
	return rev, nil
}

// Get returns stream id and its revision.
func (st *Store) Get(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := st.kv.Get(ctx, PrefixStream+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read log stream %s: %w", id, err)
	}
	r, err := DecodeRecord(e.Value())
	return r, e.Revision(), err
}

// DecodeRecord decodes a stored stream.
func DecodeRecord(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("failed to decode log stream: %w", err)
	}
	return &r, nil
}

// Update replaces stream r (read at revision rev) with its new secrets; ErrConflict when it
// changed since.
func (st *Store) Update(ctx context.Context, s *Stream, sec *Secrets, rev uint64) error {
	sealed, err := st.Seal(s.ID, sec)
	if err != nil {
		return err
	}
	_, err = st.put(ctx, PrefixStream+s.ID, Record{Stream: *s, Sealed: sealed}, rev)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return ErrConflict
	}
	return err
}

// ErrConflict is returned when a stream changed between its read and its update.
var ErrConflict = errors.New("log stream changed concurrently")

// List returns every stream, oldest first.
func (st *Store) List(ctx context.Context) ([]*Record, error) {
	keys, err := st.kv.ListKeysFiltered(ctx, PrefixStream+">")
	if err != nil {
		return nil, fmt.Errorf("failed to list log streams: %w", err)
	}
	var out []*Record
	for k := range keys.Keys() {
		r, _, err := st.Get(ctx, strings.TrimPrefix(k, PrefixStream))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Delete removes stream id, its status, replay and lease, and every consumer it has had. The
// consumers go first, so the valid stream is no longer held for it even if a later step fails
// (a retried delete finishes the rest).
func (st *Store) Delete(ctx context.Context, id string) error {
	if err := DeleteConsumers(ctx, st.js, id, ""); err != nil {
		return err
	}
	for _, k := range []string{PrefixStream, PrefixStatus, PrefixReplay, PrefixLease} {
		if err := st.kv.Purge(ctx, k+id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("failed to delete %s%s: %w", k, id, err)
		}
	}
	return nil
}

// DeleteConsumers deletes stream id's consumers of the valid stream, except keep.
func DeleteConsumers(ctx context.Context, js jetstream.JetStream, id, keep string) error {
	s, err := js.Stream(ctx, event.StreamValid)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", event.StreamValid, err)
	}
	names := s.ConsumerNames(ctx)
	var doomed []string
	for n := range names.Name() {
		if OwnsConsumer(id, n) && n != keep {
			doomed = append(doomed, n)
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("failed to list consumers of %s: %w", event.StreamValid, err)
	}
	for _, n := range doomed {
		if err := s.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("failed to delete consumer %s: %w", n, err)
		}
	}
	return nil
}

// Status returns stream id's status and revision (a zero Status and 0 if none was written).
func (st *Store) Status(ctx context.Context, id string) (Status, uint64, error) {
	var s Status
	e, err := st.kv.Get(ctx, PrefixStatus+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, 0, nil
	}
	if err != nil {
		return s, 0, fmt.Errorf("failed to read the status of %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return s, 0, fmt.Errorf("failed to decode the status of %s: %w", id, err)
	}
	return s, e.Revision(), nil
}

// PutStatus stores stream id's status at revision rev (0: unconditionally) and returns the new
// revision.
func (st *Store) PutStatus(ctx context.Context, id string, s Status, rev uint64) (uint64, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return 0, fmt.Errorf("failed to encode the status of %s: %w", id, err)
	}
	if rev == 0 {
		rev, err = st.kv.Put(ctx, PrefixStatus+id, b)
	} else {
		rev, err = st.kv.Update(ctx, PrefixStatus+id, b, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("failed to store the status of %s: %w", id, err)
	}
	return rev, nil
}

// RequestReplay asks stream id's worker to deliver again everything received at or after from.
// A later request replaces an earlier one not yet taken up.
func (st *Store) RequestReplay(ctx context.Context, id string, r Replay) error {
	b, _ := json.Marshal(r)
	if _, err := st.kv.Put(ctx, PrefixReplay+id, b); err != nil {
		return fmt.Errorf("failed to store the replay of %s: %w", id, err)
	}
	return nil
}

// PendingReplay returns stream id's replay request not yet taken up, with its revision.
func (st *Store) PendingReplay(ctx context.Context, id string) (*Replay, uint64, error) {
	e, err := st.kv.Get(ctx, PrefixReplay+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the replay of %s: %w", id, err)
	}
	var r Replay
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("failed to decode the replay of %s: %w", id, err)
	}
	return &r, e.Revision(), nil
}

// TakeReplay removes replay request of stream id at revision rev (once it is acted on).
func (st *Store) TakeReplay(ctx context.Context, id string, rev uint64) error {
	if err := st.kv.Delete(ctx, PrefixReplay+id, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("failed to settle the replay of %s: %w", id, err)
	}
	return nil
}
