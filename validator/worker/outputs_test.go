package worker_test

import (
	"context"
	"fmt"
	"sync"
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

// fillValid fills the valid stream (capped at 1 MiB by the caller) to its last few bytes.
func fillValid(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	for _, size := range []int{64 << 10, 4 << 10, 256, 16} {
		for i := 0; ; i++ {
			require.Less(t, i, 1000, "the valid stream never filled up")
			if _, err := js.Publish(context.Background(), event.ValidSubject("org_filler"), make([]byte, size)); err != nil {
				break
			}
		}
	}
}

// Output-side failure (a): the valid stream refuses every publish for far longer than the delivery
// limit used to allow, then takes them again. Every event must end in the valid stream, none in the
// rejected one.
func TestValidStreamRefusingForLongLosesNothing(t *testing.T) {
	limits := natsx.DefaultStreamLimits()
	limits.MaxBytes = 1 << 20
	_, js := natstest.NewWithLimits(t, limits)
	reg, err := schema.NewRegistry(context.Background(), js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	fillValid(t, js)

	var recs []*event.Record
	for i := 0; i < 20; i++ {
		r := newRecord(t, fmt.Sprintf("org_full_%d", i%3))
		publishRecord(t, js, r)
		recs = append(recs, r)
	}
	cfg := testConfig()
	cfg.AckWait = time.Second
	startWorker(t, js, reg, cfg)

	time.Sleep(6 * time.Second) // refusing for 6 AckWaits (and, before the fix, 6 naks of 1 s)
	assert.Zero(t, streamCount(t, js, event.StreamRejected), "a full valid stream is not a reason to reject")

	s, err := js.Stream(context.Background(), event.StreamValid)
	require.NoError(t, err)
	cfgS := s.CachedInfo().Config
	cfgS.MaxBytes = 4 << 20
	_, err = js.UpdateStream(context.Background(), cfgS)
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		ids := msgIDs(t, js, event.StreamValid)
		for _, r := range recs {
			if ids[r.MsgID()] != 1 {
				return false
			}
		}
		return true
	}, waitFor, 200*time.Millisecond, "every event reaches the valid stream once it takes them again")
	requireDrained(t, js)
	assert.Zero(t, streamCount(t, js, event.StreamRejected))
}

// unreachableRegistry is the real registry whose lookups fail until a moment, as when the schemas
// bucket cannot be reached for a while.
type unreachableRegistry struct {
	*schema.Registry
	until atomic.Int64 // unix nanoseconds
	calls atomic.Int32
}

func (u *unreachableRegistry) Lookup(ctx context.Context, a string, v int) (*schema.Compiled, error) {
	u.calls.Add(1)
	if time.Now().UnixNano() < u.until.Load() {
		return nil, fmt.Errorf("schemas bucket unreachable")
	}
	return u.Registry.Lookup(ctx, a, v)
}

// Output-side failure (b): schemas unreachable for a long time, then back.
func TestSchemasUnreachableForLongLosesNothing(t *testing.T) {
	e := newEnv(t)
	reg := &unreachableRegistry{Registry: e.reg}
	reg.until.Store(time.Now().Add(6 * time.Second).UnixNano())
	var recs []*event.Record
	for i := 0; i < 10; i++ {
		r := newRecord(t, "org_noschemas")
		publishRecord(t, e.js, r)
		recs = append(recs, r)
	}
	cfg := testConfig()
	cfg.AckWait = time.Second
	startWorker(t, e.js, reg, cfg)

	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) == uint64(len(recs)) }, waitFor, tick)
	requireDrained(t, e.js)
	for _, r := range recs {
		assert.NotNil(t, findByMsgID(t, e.js, event.StreamValid, r.MsgID()), r.ID)
	}
	assert.Zero(t, streamCount(t, e.js, event.StreamRejected), "unreachable schemas are not a reason to reject")
	assert.Greater(t, reg.calls.Load(), int32(len(recs)), "looked up again while unreachable")
}

// panickyRegistry panics when asked for one action: a record the validator crashes on.
type panickyRegistry struct {
	*schema.Registry
	action string
}

func (p *panickyRegistry) Lookup(ctx context.Context, a string, v int) (*schema.Compiled, error) {
	if a == p.action {
		panic("validation blew up on " + a)
	}
	return p.Registry.Lookup(ctx, a, v)
}

// Input-side poison (c): a record that makes validation panic is dead-lettered with the panic as
// its reason, and the rest of its batch is stored.
func TestRecordThatPanicsIsDeadLetteredAlone(t *testing.T) {
	e := newEnv(t)
	const org = "org_panic"
	var good []*event.Record
	for i := 0; i < 4; i++ {
		r := newRecord(t, org)
		publishRecord(t, e.js, r)
		good = append(good, r)
	}
	bad := newRecord(t, org)
	bad.Event.Action = "test.panic"
	publishRecord(t, e.js, bad)
	for i := 0; i < 4; i++ {
		r := newRecord(t, org)
		publishRecord(t, e.js, r)
		good = append(good, r)
	}
	startWorker(t, e.js, &panickyRegistry{Registry: e.reg, action: "test.panic"}, testConfig())

	var rej *jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		rej = findByMsgID(t, e.js, event.StreamRejected, bad.MsgID())
		return rej != nil
	}, waitFor, tick)
	assert.Contains(t, rej.Header.Get(event.HeaderRejectReason), "validation blew up on test.panic")
	assert.Contains(t, rej.Header.Get(event.HeaderRejectReason), "validator crashed")
	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) == uint64(len(good)) }, waitFor, tick)
	requireDrained(t, e.js)
	for _, r := range good {
		assert.NotNil(t, findByMsgID(t, e.js, event.StreamValid, r.MsgID()), r.ID)
	}
	assert.Equal(t, uint64(1), streamCount(t, e.js, event.StreamRejected))
}

// slowRegistry takes a while for every lookup and counts lookups per action.
type slowRegistry struct {
	*schema.Registry
	delay time.Duration
	mu    sync.Mutex
	calls map[string]int
}

func (s *slowRegistry) Lookup(ctx context.Context, a string, v int) (*schema.Compiled, error) {
	s.mu.Lock()
	s.calls[a]++
	s.mu.Unlock()
	time.Sleep(s.delay)
	return s.Registry.Lookup(ctx, a, v)
}

// (d) A batch that takes several AckWaits is kept in progress: the second validator loop on the
// same durable consumer never receives its messages, and each event is validated once.
func TestSlowBatchIsNotRedeliveredToAnotherValidator(t *testing.T) {
	e := newEnv(t)
	const n = 6
	var recs []*event.Record
	for i := 0; i < n; i++ {
		r := newRecord(t, "org_slow")
		r.Event.Action = fmt.Sprintf("slow.a%d", i)
		publishRecord(t, e.js, r)
		recs = append(recs, r)
	}
	reg := &slowRegistry{Registry: e.reg, delay: 700 * time.Millisecond, calls: map[string]int{}}
	cfg := testConfig()
	cfg.AckWait = time.Second // the batch takes about 4 s
	startWorker(t, e.js, reg, cfg)
	startWorker(t, e.js, reg, cfg)

	require.Eventually(t, func() bool { return streamCount(t, e.js, event.StreamValid) == n }, waitFor, tick)
	requireDrained(t, e.js)
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for _, r := range recs {
		assert.Equal(t, 1, reg.calls[r.Event.Action], "event %s validated once", r.Event.Action)
	}
	c, err := e.js.Consumer(context.Background(), event.StreamRaw, event.ConsumerValidator)
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	assert.Zero(t, info.NumRedelivered)
	assert.Equal(t, uint64(n), streamCount(t, e.js, event.StreamValid))
}

// msgIDs counts the messages of stream by Nats-Msg-Id.
func msgIDs(t testing.TB, js jetstream.JetStream, stream string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, m := range streamMsgs(t, js, stream) {
		ids[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	return ids
}

// countByMsgID counts the messages of stream whose Nats-Msg-Id is id.
func countByMsgID(t testing.TB, js jetstream.JetStream, stream, id string) int {
	t.Helper()
	return msgIDs(t, js, stream)[id]
}

// A validator published an event to the valid stream and died before acknowledging the raw
// message; the raw message comes back only after the valid stream's duplicate window has passed
// (the validators were down, or the outputs failed, for longer than the window). The message-id
// dedup no longer covers it, so the validator must find the earlier copy instead of adding another:
// from the valid stream's tail when it starts after a quiet spell, or by looking the id up on the
// organization's subject when it was running all along.
func TestRedeliveryAfterTheDuplicateWindowIsNotRepublished(t *testing.T) {
	tests := []struct {
		name          string
		ackWait       time.Duration // of the dead validator's delivery
		startAfterGap bool          // the live validator starts after the window has passed
	}{
		{"validator started after the window", time.Second, true},
		{"validator running when the late redelivery comes", 4 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := natsx.DefaultStreamLimits()
			limits.Duplicates = 2 * time.Second
			_, js := natstest.NewWithLimits(t, limits)
			ctx := context.Background()
			reg, err := schema.NewRegistry(ctx, js, quietLog())
			require.NoError(t, err)
			t.Cleanup(reg.Close)

			const org = "org_late"
			rec := newRecord(t, org)
			data := publishRecord(t, js, rec)
			cfg := testConfig()
			cfg.AckWait = tt.ackWait
			_, err = worker.New(ctx, js, reg, cfg, quietLog()) // the durable consumer, as the dead validator left it
			require.NoError(t, err)
			cons, err := js.Consumer(ctx, event.StreamRaw, event.ConsumerValidator)
			require.NoError(t, err)
			natstest.Fetch(t, cons, 1) // the dead validator held the raw message
			m := nats.NewMsg(event.ValidSubject(org))
			m.Data = data
			m.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
			_, err = js.PublishMsg(ctx, m) // ...and had republished it
			require.NoError(t, err)
			other := newRecord(t, org)
			publishRecord(t, js, other)

			if tt.startAfterGap {
				time.Sleep(3 * time.Second) // past the duplicate window
			}
			startWorker(t, js, reg, cfg)
			require.Eventually(t, func() bool { return findByMsgID(t, js, event.StreamValid, other.MsgID()) != nil }, waitFor, tick)
			requireDrained(t, js)
			assert.Equal(t, 1, countByMsgID(t, js, event.StreamValid, rec.MsgID()), "the late redelivery must not add a second copy")
			assert.Equal(t, uint64(2), streamCount(t, js, event.StreamValid))
			attempts, err := js.KeyValue(ctx, event.BucketValidatorAttempts)
			require.NoError(t, err)
			st, err := attempts.Status(ctx)
			require.NoError(t, err)
			assert.Positive(t, st.Bytes(), "the redelivered message was validated alone, under a marker")
			lister, err := attempts.ListKeysFiltered(ctx, "raw.>")
			require.NoError(t, err)
			for k := range lister.Keys() {
				t.Errorf("marker %s left behind: the validation ended, it must be cleared", k)
			}
		})
	}
}
