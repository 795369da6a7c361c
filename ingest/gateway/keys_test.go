package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/wire"
)

func withKey(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

// bodyN is workosBody with event metadata n, so each n is another request.
func bodyN(t testing.TB, n int) string {
	return patch(t, func(_, ev map[string]any) { ev["metadata"] = map[string]any{"attempts": n} })
}

// A keyed event is published on its key's subject, only if that subject holds nothing, with the
// digest of the request; its message id is the event's own.
func TestKeyedEventMessage(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, withKey("key-1")).Code)
	msgs := e.rawMsgs(t)
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, event.RawKeySubject(org, "key-1"), m.Subject)
	assert.True(t, strings.HasPrefix(m.Subject, "logbook.raw."+org+".k."))
	assert.Equal(t, org, event.OrgFromSubject(m.Subject))
	assert.Regexp(t, `^[0-9a-f]{64}$`, m.Header.Get(event.HeaderRequestDigest))
	rec, err := event.Unmarshal(m.Data)
	require.NoError(t, err)
	assert.Equal(t, rec.MsgID(), m.Header.Get(jetstream.MsgIDHeader))
}

// The key is remembered by the raw stream, not by JetStream's duplicate window: a repeat after the
// window (1 s here) publishes nothing and is answered 200; another body with the key is 409.
func TestKeyOutlivesTheDuplicateWindow(t *testing.T) {
	limits := natsx.DefaultStreamLimits()
	limits.Duplicates = time.Second
	_, js := natstest.NewWithLimits(t, limits)
	e := newEnvWith(t, js, gateway.DefaultConfig())
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, withKey("k")).Code)
	time.Sleep(1500 * time.Millisecond)
	r := e.postEvent(t, workosBody, withKey("k"))
	require.Equal(t, http.StatusOK, r.Code, "body: %s", r.Body)
	assert.JSONEq(t, `{"success":true}`, string(r.Body))
	requireEnvelope(t, e.postEvent(t, bodyN(t, 2), withKey("k")), http.StatusConflict, "idempotency_error")
	assert.Equal(t, uint64(1), e.rawCount(t))
}

// Concurrent requests with one key and different bodies: exactly one is stored and answered 200,
// every other is 409; with the same body, all are 200 and one is stored. Unrelated traffic shares
// the batches, so several attempts of a key land in one atomic batch.
func TestConcurrentRequestsWithOneKey(t *testing.T) {
	e := newEnv(t)
	const n = 48
	codes := make([]int, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(3)
		go func() { defer wg.Done(); codes[i] = e.postEvent(t, bodyN(t, i), withKey("shared-diff")).Code }()
		go func() { defer wg.Done(); codes[n+i] = e.postEvent(t, workosBody, withKey("shared-same")).Code }()
		go func() { defer wg.Done(); assert.Equal(t, http.StatusOK, e.postEvent(t, bodyN(t, i), nil).Code) }()
	}
	wg.Wait()
	count := func(codes []int) map[int]int {
		m := map[int]int{}
		for _, c := range codes {
			m[c]++
		}
		return m
	}
	assert.Equal(t, map[int]int{200: 1, 409: n - 1}, count(codes[:n]), "different bodies: one wins")
	assert.Equal(t, map[int]int{200: n}, count(codes[n:]), "the same body: every attempt is answered 200")
	perSubject := map[string]int{}
	for _, m := range e.rawMsgs(t) {
		perSubject[m.Subject]++
	}
	assert.Equal(t, 1, perSubject[event.RawKeySubject(org, "shared-diff")])
	assert.Equal(t, 1, perSubject[event.RawKeySubject(org, "shared-same")])
	assert.Equal(t, n, perSubject[event.RawSubject(org)])
}

func (e *env) bulk(t *testing.T, lines ...string) gateway.BulkResponse {
	t.Helper()
	r := e.do(t, http.MethodPost, "/audit_logs/events/bulk", strings.Join(lines, "\n"),
		map[string]string{"Content-Type": "application/x-ndjson"})
	require.Equal(t, http.StatusOK, r.Code, "body: %s", r.Body)
	var out gateway.BulkResponse
	require.NoError(t, json.Unmarshal(r.Body, &out))
	return out
}

// line is a bulk line: body with an idempotency_key.
func line(t *testing.T, body, key string) string {
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	m["idempotency_key"] = key
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return string(b)
}

// Bulk lines with keys follow the same rules, within one request and across requests: the same
// request again is a duplicate naming the stored event, another request with the key is a 409.
func TestBulkLinesWithKeys(t *testing.T) {
	e := newEnv(t)
	lines := []string{
		line(t, bodyN(t, 1), "b1"), line(t, bodyN(t, 1), "b1"), line(t, bodyN(t, 2), "b2"), line(t, bodyN(t, 3), "b1"),
	}
	out := e.bulk(t, lines...)
	// The first line with a key is the request; later lines with it repeat it.
	assert.Equal(t, gateway.LineAccepted, out.Results[0].Status)
	stored1 := out.Results[0].ID
	require.Len(t, stored1, 26)
	assert.Equal(t, gateway.LineDuplicate, out.Results[1].Status)
	assert.Equal(t, stored1, out.Results[1].ID, "a repeat names the stored event")
	assert.Equal(t, gateway.LineAccepted, out.Results[2].Status)
	stored2 := out.Results[2].ID
	assert.Equal(t, gateway.LineError, out.Results[3].Status)
	assert.Equal(t, http.StatusConflict, out.Results[3].Error.Status)
	assert.Equal(t, "idempotency_error", out.Results[3].Error.Code)
	assert.Equal(t, uint64(2), e.rawCount(t))

	again := e.bulk(t, lines...)
	assert.Equal(t, 0, again.Accepted)
	assert.Equal(t, 3, again.Duplicates)
	assert.Equal(t, 1, again.Failed)
	for i, want := range []string{stored1, stored1, stored2} {
		assert.Equal(t, gateway.LineDuplicate, again.Results[i].Status)
		assert.Equal(t, want, again.Results[i].ID, "line %d names the stored event", i+1)
	}
	// The single endpoint sees the bulk's keys too.
	assert.Equal(t, http.StatusOK, e.postEvent(t, bodyN(t, 2), withKey("b2")).Code)
	requireEnvelope(t, e.postEvent(t, bodyN(t, 9), withKey("b2")), http.StatusConflict, "idempotency_error")
	assert.Equal(t, uint64(2), e.rawCount(t))
}

// laggingStream is the raw stream read through a replica that has not caught up yet (as on a
// replicated stream whose concurrent publish of the key is still in process): the first reads of
// a key find nothing.
type laggingStream struct {
	jetstream.Stream
	mu    sync.Mutex
	blind int
	reads int
}

func (s *laggingStream) GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	s.mu.Lock()
	s.reads++
	blind := s.reads <= s.blind
	s.mu.Unlock()
	if blind {
		return nil, jetstream.ErrMsgNotFound
	}
	return s.Stream.GetLastMsgForSubject(ctx, subject)
}

// A key whose subject is taken but reads empty is published again until the message is readable:
// never stored twice, and answered as what it is.
func TestKeyTakenButNotYetReadable(t *testing.T) {
	_, js := natstest.New(t)
	reg, err := schema.NewRegistry(context.Background(), js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	raw := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(raw.Close)
	lag := &laggingStream{Stream: rawStream(t, js), blind: 3}
	srv := wire.NewServer(quietLog())
	gateway.New(raw, lag, reg, gateway.DefaultConfig(), quietLog()).Register(srv.Group(""))
	e := &env{e: srv, js: js}

	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, withKey("k")).Code)
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, withKey("k")).Code)
	assert.Equal(t, 4, lag.reads, "read until the message showed")
	lag.reads = 0
	requireEnvelope(t, e.postEvent(t, bodyN(t, 5), withKey("k")), http.StatusConflict, "idempotency_error")
	assert.Equal(t, uint64(1), e.rawCount(t))

	// A key that stays unreadable is a 503 (not stored as far as the producer knows; a retry is
	// safe), never a second message.
	lag.blind, lag.reads = 1000, 0
	r := e.postEvent(t, workosBody, withKey("k"))
	requireEnvelope(t, r, http.StatusServiceUnavailable, "service_unavailable")
	assert.Equal(t, uint64(1), e.rawCount(t))
}

// The lines of a bulk request (without keys, and the first line of each key) are published
// together, as one atomic batch: not as many batches as the committer happens to gather.
func TestBulkRequestIsOneAtomicBatch(t *testing.T) {
	e := newEnv(t)
	var lines []string
	for i := range 300 {
		if i%50 == 0 {
			lines = append(lines, line(t, bodyN(t, i), fmt.Sprintf("k%d", i)))
			continue
		}
		lines = append(lines, bodyN(t, i))
	}
	out := e.bulk(t, lines...)
	require.Equal(t, 300, out.Accepted)
	batches := map[string]int{}
	for _, m := range e.rawMsgs(t) {
		batches[m.Header.Get("Nats-Batch-Id")]++
	}
	assert.Len(t, batches, 1, "batches: %v", batches)
	assert.NotContains(t, batches, "", "stored by an atomic batch")
}
