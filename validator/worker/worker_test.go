package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/validator/worker"
)

const (
	action  = "user.signed_in"
	waitFor = 20 * time.Second
	tick    = 20 * time.Millisecond
)

// The schema the tests register for action: typed actor, target and event metadata.
const definition = `{"actor":{"metadata":{"type":"object","properties":{"role":{"type":"string"}}}},
  "targets":[{"type":"team","metadata":{"type":"object","properties":{"plan":{"type":"string"}}}}],
  "metadata":{"type":"object","properties":{"attempts":{"type":"number"}}}}`

func quietLog() *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig() worker.Config {
	return worker.Config{BatchSize: 50, FetchWait: 100 * time.Millisecond, AckWait: 30 * time.Second,
		RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond}
}

func newID(t testing.TB) string {
	t.Helper()
	var b [10]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "01TEST" + strings.ToUpper(hex.EncodeToString(b[:]))
}

func newRecord(t testing.TB, org string) *event.Record {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &event.Record{
		ID:             newID(t),
		OrganizationID: org,
		ReceivedAt:     now,
		Event: event.Event{
			Action:     action,
			OccurredAt: now.Add(-time.Minute),
			Version:    1,
			Actor:      event.Entity{ID: "user_1", Type: "user", Name: "Jon", Metadata: map[string]any{"role": "admin"}},
			Targets:    []event.Entity{{ID: "team_1", Type: "team", Metadata: map[string]any{"plan": "pro"}}},
			Context:    event.Context{Location: "203.0.113.7", UserAgent: "test"},
			Metadata:   map[string]any{"attempts": json.Number("3")},
		},
	}
}

type env struct {
	js  jetstream.JetStream
	reg *schema.Registry
}

// newEnv starts JetStream with Logbook's streams and a schema registry with definition registered
// as version 1 of action.
func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := natstest.New(t)
	ctx := context.Background()
	reg, err := schema.NewRegistry(ctx, js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	d, err := schema.ParseDefinition([]byte(definition))
	require.NoError(t, err)
	_, err = reg.Create(ctx, action, d)
	require.NoError(t, err)
	return &env{js: js, reg: reg}
}

// startWorker runs a worker on reg until the test ends and checks that Run returns on cancel.
func startWorker(t *testing.T, js jetstream.JetStream, reg interface {
	Lookup(context.Context, string, int) (*schema.Compiled, error)
}, cfg worker.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(ctx, js, reg, cfg, quietLog())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("worker.Run did not return after cancel")
		}
	})
}

// publishRaw publishes data to org's raw subject with the given raw message id, as the gateway does.
func publishRaw(t testing.TB, js jetstream.JetStream, org, msgID string, data []byte) {
	t.Helper()
	m := nats.NewMsg(event.RawSubject(org))
	m.Data = data
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	_, err := js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

func publishRecord(t testing.TB, js jetstream.JetStream, rec *event.Record) []byte {
	t.Helper()
	data, err := rec.Marshal()
	require.NoError(t, err)
	publishRaw(t, js, rec.OrganizationID, rec.MsgID(), data)
	return data
}

func streamCount(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// streamMsgs reads every message of a stream, oldest first.
func streamMsgs(t testing.TB, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// findByMsgID returns the message of stream whose Nats-Msg-Id is id, or nil.
func findByMsgID(t testing.TB, js jetstream.JetStream, stream, id string) *jetstream.RawStreamMsg {
	t.Helper()
	for _, m := range streamMsgs(t, js, stream) {
		if m.Header.Get(jetstream.MsgIDHeader) == id {
			return m
		}
	}
	return nil
}

// requireDrained waits until the validator consumer has nothing pending and nothing unacknowledged.
func requireDrained(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	var last *jetstream.ConsumerInfo
	ok := assert.Eventually(t, func() bool {
		c, err := js.Consumer(context.Background(), event.StreamRaw, event.ConsumerValidator)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return false
		}
		last = info
		return info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, tick)
	if !ok && last != nil {
		t.Fatalf("validator consumer not drained: pending %d, ack pending %d, redelivered %d",
			last.NumPending, last.NumAckPending, last.NumRedelivered)
	}
}

func TestValidEventIsRepublishedUnchanged(t *testing.T) {
	e := newEnv(t)
	startWorker(t, e.js, e.reg, testConfig())

	rec := newRecord(t, "org_valid")
	data := publishRecord(t, e.js, rec)

	var got *jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		got = findByMsgID(t, e.js, event.StreamValid, rec.MsgID())
		return got != nil
	}, waitFor, tick)
	assert.Equal(t, event.ValidSubject(rec.OrganizationID), got.Subject)
	assert.Equal(t, data, got.Data, "the payload must pass through byte for byte")
	assert.Equal(t, rec.MsgID(), got.Header.Get(jetstream.MsgIDHeader))
	requireDrained(t, e.js)
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected))
}

func TestInvalidEventsAreRejectedWithReason(t *testing.T) {
	e := newEnv(t)
	startWorker(t, e.js, e.reg, testConfig())

	tests := []struct {
		name   string
		patch  func(r *event.Record)
		reason string // a substring of the reject reason
	}{
		{"event metadata of the wrong type", func(r *event.Record) { r.Event.Metadata["attempts"] = "many" }, "/metadata/attempts"},
		{"actor metadata of the wrong type", func(r *event.Record) { r.Event.Actor.Metadata["role"] = json.Number("7") }, "/actor/metadata/role"},
		{"target metadata of the wrong type", func(r *event.Record) { r.Event.Targets[0].Metadata["plan"] = true }, "/targets/0/metadata/plan"},
		{"target type the schema does not list", func(r *event.Record) {
			r.Event.Targets = append(r.Event.Targets, event.Entity{ID: "inv_1", Type: "invoice"})
		}, "/targets/1"},
		{"unknown schema version", func(r *event.Record) { r.Event.Version = 2 }, schema.ErrUnknownVersion.Error()},
		{"structurally invalid record (no actor id)", func(r *event.Record) { r.Event.Actor.ID = "" }, "event.actor.id"},
		{"structurally invalid record (bad action)", func(r *event.Record) { r.Event.Action = "user signed in" }, "event.action"},
	}
	recs := make([]*event.Record, len(tests))
	for i, tt := range tests {
		recs[i] = newRecord(t, "org_reject")
		tt.patch(recs[i])
		publishRecord(t, e.js, recs[i])
	}
	// A conforming event published after them shows the worker got past all of them.
	good := newRecord(t, "org_reject")
	publishRecord(t, e.js, good)
	require.Eventually(t, func() bool { return findByMsgID(t, e.js, event.StreamValid, good.MsgID()) != nil }, waitFor, tick)
	requireDrained(t, e.js)

	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := recs[i]
			m := findByMsgID(t, e.js, event.StreamRejected, rec.MsgID())
			require.NotNil(t, m, "the event must be in the rejected stream")
			assert.Equal(t, event.RejectedSubject(rec.OrganizationID), m.Subject)
			reason := m.Header.Get(event.HeaderRejectReason)
			assert.Contains(t, reason, tt.reason)
			assert.LessOrEqual(t, len(reason), worker.MaxReasonLen)
			assert.Nil(t, findByMsgID(t, e.js, event.StreamValid, rec.MsgID()), "a rejected event must not reach the valid stream")
		})
	}
	assert.Equal(t, uint64(1), streamCount(t, e.js, event.StreamValid))
	assert.Equal(t, uint64(len(tests)), streamCount(t, e.js, event.StreamRejected))
}

// An action without any schema accepts any event, whatever version it names.
func TestActionWithoutSchemaIsAccepted(t *testing.T) {
	e := newEnv(t)
	startWorker(t, e.js, e.reg, testConfig())
	rec := newRecord(t, "org_noschema")
	rec.Event.Action = "team.created"
	rec.Event.Version = 7
	rec.Event.Metadata["attempts"] = "not a number, and nobody minds"
	publishRecord(t, e.js, rec)
	require.Eventually(t, func() bool { return findByMsgID(t, e.js, event.StreamValid, rec.MsgID()) != nil }, waitFor, tick)
	requireDrained(t, e.js)
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected))
}

func TestUndecodablePayloadsAreRejectedAndDoNotBlock(t *testing.T) {
	e := newEnv(t)
	startWorker(t, e.js, e.reg, testConfig())

	const org = "org_garbage"
	bad := [][]byte{
		[]byte("not json at all"),
		[]byte(`{"id":"","organization_id":"org_garbage"}`),    // no identity
		[]byte(`{"id":"x","organization_id":"org.with.dots"}`), // bad organization id
		[]byte(`["an", "array"]`),                              // not an object
		{0xff, 0xfe, 0x00},                                     // not text
	}
	for i, b := range bad {
		publishRaw(t, e.js, org, org+":garbage:"+string(rune('a'+i)), b)
	}
	var good []*event.Record
	for i := 0; i < 5; i++ {
		r := newRecord(t, org)
		publishRecord(t, e.js, r)
		good = append(good, r)
	}

	require.Eventually(t, func() bool {
		return streamCount(t, e.js, event.StreamValid) == uint64(len(good)) &&
			streamCount(t, e.js, event.StreamRejected) == uint64(len(bad))
	}, waitFor, tick)
	requireDrained(t, e.js)

	for _, r := range good {
		assert.NotNil(t, findByMsgID(t, e.js, event.StreamValid, r.MsgID()))
	}
	rejected := streamMsgs(t, e.js, event.StreamRejected)
	require.Len(t, rejected, len(bad))
	for i, m := range rejected {
		assert.Equal(t, bad[i], m.Data, "the rejected stream keeps the payload as it was")
		assert.Equal(t, event.RejectedSubject(org), m.Subject)
		assert.Contains(t, m.Header.Get(event.HeaderRejectReason), "undecodable record")
		assert.True(t, strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), "raw-seq:"), "keyed by raw sequence")
	}
}

// A redelivered raw message (or the same record reaching the raw stream twice under different
// raw message ids) collapses into one valid message: the validator republishes with the event id.
func TestSameRecordTwiceIsValidOnce(t *testing.T) {
	e := newEnv(t)
	startWorker(t, e.js, e.reg, testConfig())

	rec := newRecord(t, "org_dup")
	data, err := rec.Marshal()
	require.NoError(t, err)
	publishRaw(t, e.js, rec.OrganizationID, "raw-attempt-1", data)
	publishRaw(t, e.js, rec.OrganizationID, "raw-attempt-2", data)
	require.Equal(t, uint64(2), streamCount(t, e.js, event.StreamRaw), "both copies are in the raw stream")

	// A rejected record twice is also rejected once.
	bad := newRecord(t, "org_dup")
	bad.Event.Metadata["attempts"] = "many"
	badData, err := bad.Marshal()
	require.NoError(t, err)
	publishRaw(t, e.js, bad.OrganizationID, "raw-bad-1", badData)
	publishRaw(t, e.js, bad.OrganizationID, "raw-bad-2", badData)

	requireDrained(t, e.js)
	require.Eventually(t, func() bool {
		return findByMsgID(t, e.js, event.StreamValid, rec.MsgID()) != nil &&
			findByMsgID(t, e.js, event.StreamRejected, bad.MsgID()) != nil
	}, waitFor, tick)
	assert.Equal(t, uint64(1), streamCount(t, e.js, event.StreamValid))
	assert.Equal(t, uint64(1), streamCount(t, e.js, event.StreamRejected))
}

func TestTwoWorkersProcessEachEventOnce(t *testing.T) {
	e := newEnv(t)
	const n = 500

	futures := make([]jetstream.PubAckFuture, 0, n)
	want := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		org := "org_a"
		if i%2 == 1 {
			org = "org_b"
		}
		rec := newRecord(t, org)
		data, err := rec.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.RawSubject(org))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, org+":"+rec.ID)
		f, err := e.js.PublishMsgAsync(m)
		require.NoError(t, err)
		futures = append(futures, f)
		want[rec.MsgID()] = true
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(waitFor):
		t.Fatal("async publishes not acknowledged")
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish failed: %v", err)
		}
	}
	require.Equal(t, uint64(n), streamCount(t, e.js, event.StreamRaw))

	cfg := testConfig()
	cfg.BatchSize = 25 // small batches so both workers take turns
	startWorker(t, e.js, e.reg, cfg)
	startWorker(t, e.js, e.reg, cfg)

	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) >= n }, waitFor, tick)
	requireDrained(t, e.js)
	assert.Equal(t, uint64(n), streamCount(t, e.js, event.StreamValid))
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected))

	got := map[string]int{}
	for _, m := range streamMsgs(t, e.js, event.StreamValid) {
		got[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	assert.Len(t, got, n)
	for id := range want {
		assert.Equal(t, 1, got[id], id)
	}
	// Every raw message was acknowledged.
	c, err := e.js.Consumer(context.Background(), event.StreamRaw, event.ConsumerValidator)
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	assert.Equal(t, uint64(n), info.AckFloor.Stream)
}

// flakyRegistry is the real registry whose first lookups fail, as when the schemas bucket cannot be
// reached: the worker must hold the event back (nak) rather than reject or pass it.
type flakyRegistry struct {
	*schema.Registry
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flakyRegistry) Lookup(ctx context.Context, a string, v int) (*schema.Compiled, error) {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New("schemas bucket unreachable")
	}
	return f.Registry.Lookup(ctx, a, v)
}

func TestSchemaLookupFailureRetriesInsteadOfDeciding(t *testing.T) {
	e := newEnv(t)
	reg := &flakyRegistry{Registry: e.reg}
	reg.failures.Store(2)
	startWorker(t, e.js, reg, testConfig())

	rec := newRecord(t, "org_flaky")
	publishRecord(t, e.js, rec)
	require.Eventually(t, func() bool { return findByMsgID(t, e.js, event.StreamValid, rec.MsgID()) != nil }, waitFor, tick)
	requireDrained(t, e.js)
	assert.GreaterOrEqual(t, reg.calls.Load(), int32(3), "looked up again after each failure")
	assert.Equal(t, uint64(1), streamCount(t, e.js, event.StreamValid))
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected))
}

// A worker started on a non-empty raw stream (a restart) picks up everything that was waiting.
func TestWorkerRestartResumesFromTheDurableConsumer(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(ctx, e.js, e.reg, testConfig(), quietLog())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	first := newRecord(t, "org_restart")
	publishRecord(t, e.js, first)
	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) == 1 }, waitFor, tick)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("worker.Run did not return after cancel")
	}

	second := newRecord(t, "org_restart")
	publishRecord(t, e.js, second)
	startWorker(t, e.js, e.reg, testConfig())
	require.Eventually(t, func() bool { return findByMsgID(t, e.js, event.StreamValid, second.MsgID()) != nil }, waitFor, tick)
	requireDrained(t, e.js)
	assert.Equal(t, uint64(2), streamCount(t, e.js, event.StreamValid))
}

// A worker that crashed after its republish was stored but before it acked the raw message leaves
// the event both in the valid stream and pending in the raw stream. Its redelivery, batched with
// new events, must neither duplicate it nor hold back the new ones (the atomic batch holding an
// already-stored id is refused whole and resent message by message).
func TestRedeliveryOfAlreadyRepublishedEventWithNewOnes(t *testing.T) {
	e := newEnv(t)
	const org = "org_crash"
	done := newRecord(t, org)
	data := publishRecord(t, e.js, done)
	m := nats.NewMsg(event.ValidSubject(org))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, done.MsgID())
	_, err := e.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)

	var fresh []*event.Record
	for i := 0; i < 5; i++ {
		r := newRecord(t, org)
		publishRecord(t, e.js, r)
		fresh = append(fresh, r)
	}
	startWorker(t, e.js, e.reg, testConfig())

	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) >= uint64(1+len(fresh)) }, waitFor, tick)
	requireDrained(t, e.js)
	assert.Equal(t, uint64(1+len(fresh)), streamCount(t, e.js, event.StreamValid))
	for _, r := range append(fresh, done) {
		assert.NotNil(t, findByMsgID(t, e.js, event.StreamValid, r.MsgID()), r.ID)
	}
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected))
}

// When the valid stream cannot take an event, the raw message is held, in progress: not
// acknowledged, not redelivered, not rejected and not lost.
func TestFullValidStreamHoldsEventsBack(t *testing.T) {
	limits := natsx.DefaultStreamLimits()
	limits.MaxBytes = 1 << 20
	_, js := natstest.NewWithLimits(t, limits)
	reg, err := schema.NewRegistry(context.Background(), js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	fillValid(t, js)
	rec := newRecord(t, "org_full")
	publishRecord(t, js, rec)
	cfg := testConfig()
	cfg.AckWait = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := worker.New(ctx, js, reg, cfg, quietLog())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.Eventually(t, func() bool { n, _ := w.Backlog(); return n == 1 }, waitFor, tick, "the event waits in the backlog")
	time.Sleep(3 * cfg.AckWait)
	cons, err := js.Consumer(context.Background(), event.StreamRaw, event.ConsumerValidator)
	require.NoError(t, err)
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	assert.Zero(t, info.AckFloor.Stream, "the raw message is not acknowledged")
	assert.Equal(t, 1, info.NumAckPending, "it is held")
	assert.Zero(t, info.NumRedelivered, "kept in progress: never redelivered")
	n, oldest := w.Backlog()
	assert.Equal(t, 1, n)
	assert.Greater(t, time.Since(oldest), 2*cfg.AckWait)
	assert.Nil(t, findByMsgID(t, js, event.StreamValid, rec.MsgID()))
	assert.Zero(t, streamCount(t, js, event.StreamRejected), "a full stream is not a reason to reject")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "Run returns on cancel even while an output fails")
	case <-time.After(waitFor):
		t.Fatal("worker.Run did not return after cancel while its output failed")
	}
}
