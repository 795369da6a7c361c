package logstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
	ls "github.com/logbookhq/logbook/writer/logstream"
)

const (
	waitFor = 60 * time.Second
	tick    = 20 * time.Millisecond
)

func quietLog() *slog.Logger {
	if os.Getenv("LOGSTREAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// env is a real JetStream with Logbook's streams, the streams bucket, and the shared embedded
// ClickHouse engine.
type env struct {
	ns *server.Server
	js jetstream.JetStream
	st *logstream.Store
	db *store.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns, js := natstest.New(t)
	ctx := context.Background()
	require.NoError(t, logstream.EnsureBucket(ctx, js, 1))
	st, err := logstream.Open(ctx, js)
	require.NoError(t, err)
	return &env{ns: ns, js: js, st: st, db: storetest.Shared(t)}
}

func testConfig() ls.Config {
	c := ls.DefaultConfig()
	c.RetryInitial, c.RetryMax = 50*time.Millisecond, 400*time.Millisecond
	c.LeaseTTL = 3 * time.Second
	c.RequestTimeout = 5 * time.Second
	c.ClockSkew = 2 * time.Second
	return c
}

// startManager runs a Manager until the returned stop is called (or the test ends).
func (e *env) startManager(t *testing.T, cfg ls.Config) (stop func()) {
	t.Helper()
	stop, _ = e.startManagerConn(t, cfg)
	return stop
}

// startManagerConn runs a Manager on a connection of its own, and returns a crash function too:
// the connection closes at once (nothing more reaches JetStream: no acknowledgement, no Nak), then
// the Manager stops, as if the process had been killed.
func (e *env) startManagerConn(t *testing.T, cfg ls.Config) (stop, crash func()) {
	t.Helper()
	nc, js, err := natsx.ConnectInProcess(e.ns, "manager")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	st, err := logstream.Open(context.Background(), js)
	require.NoError(t, err)
	m, err := ls.NewManager(js, st, e.db, cfg, quietLog())
	require.NoError(t, err)
	stop = e.runManager(t, m)
	return stop, func() { nc.Close(); stop() }
}

// runManager runs m until the returned stop is called (or the test ends).
func (e *env) runManager(t *testing.T, m *ls.Manager) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// createStream stores a stream as the API does.
func (e *env) createStream(t *testing.T, s logstream.Stream, sec logstream.Secrets) *logstream.Stream {
	t.Helper()
	s.ID = logstream.IDPrefix + ulid.Make().String()
	if s.Name == "" {
		s.Name = "test"
	}
	if s.State == "" {
		s.State = logstream.StateActive
	}
	s.CreatedAt, s.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	require.NoError(t, logstream.Validate(&s, &sec))
	require.NoError(t, e.st.Create(context.Background(), &s, &sec, logstream.Start{}))
	return &s
}

func (e *env) status(t *testing.T, id string) logstream.Status {
	t.Helper()
	st, _, err := e.st.Status(context.Background(), id)
	require.NoError(t, err)
	return st
}

var idSeq atomic.Int64

// newRecords returns n events of org, received now, in order.
func newRecords(org string, n int) []*event.Record {
	now := time.Now().UTC().Truncate(time.Millisecond)
	out := make([]*event.Record, n)
	for i := range out {
		out[i] = &event.Record{
			ID:             ulid.Make().String() + fmt.Sprintf("%06d", idSeq.Add(1)%1_000_000),
			OrganizationID: org,
			ReceivedAt:     now,
			Event: event.Event{
				Action:     "user.login_failed",
				OccurredAt: now.Add(-time.Second),
				Actor:      event.Entity{ID: "user_1", Type: "user", Name: "Jon"},
				Targets:    []event.Entity{{ID: "team_1", Type: "team"}},
				Context:    event.Context{Location: "203.0.113.7", UserAgent: "test"},
				Metadata:   map[string]any{"i": json.Number(fmt.Sprint(i))},
			},
		}
	}
	return out
}

// publishValid publishes recs to the valid stream as the validator does.
func publishValid(t testing.TB, js jetstream.JetStream, recs []*event.Record) {
	t.Helper()
	for _, r := range recs {
		data, err := r.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.ValidSubject(r.OrganizationID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, r.MsgID())
		_, err = js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
}

func ids(recs []*event.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// receiver is a real HTTP server on loopback that a test can kill and restart on the same address.
// It records every request it answered 2xx.
type receiver struct {
	t      *testing.T
	addr   string
	handle func(w http.ResponseWriter, r *http.Request, body []byte) (batchID string, events []receivedEvent, ok bool)

	mu       sync.Mutex
	srv      *http.Server
	requests []received
	bad      []string // requests the receiver refused as malformed or unsigned
	status   int      // when set, every request is answered with it (and not recorded)
	header   http.Header
}

type receivedEvent struct{ ID, Org string }

type received struct {
	BatchID string
	Events  []receivedEvent
	Header  http.Header
	Body    []byte
}

func startReceiver(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body []byte) (string, []receivedEvent, bool)) *receiver {
	t.Helper()
	rc := &receiver{t: t, handle: handle}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rc.addr = ln.Addr().String()
	rc.serve(ln)
	t.Cleanup(rc.kill)
	return rc
}

func (rc *receiver) url() string { return "http://" + rc.addr }

func (rc *receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(rc.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	rc.mu.Lock()
	rc.srv = srv
	rc.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (rc *receiver) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	status, header := rc.status, rc.header
	rc.mu.Unlock()
	if status != 0 {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		return
	}
	id, events, ok := rc.handle(w, r, body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !ok {
		rc.bad = append(rc.bad, r.URL.Path+" "+string(body[:min(len(body), 200)]))
		return
	}
	if id == "" && len(events) > 0 { // a format without a batch id: its first and last events name it
		id = events[0].ID + "_" + events[len(events)-1].ID
	}
	rc.requests = append(rc.requests, received{BatchID: id, Events: events, Header: r.Header.Clone(), Body: body})
}

// kill stops the server at once: the listener and every connection close.
func (rc *receiver) kill() {
	rc.mu.Lock()
	srv := rc.srv
	rc.srv = nil
	rc.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart serves again on the same address.
func (rc *receiver) restart() {
	var ln net.Listener
	var err error
	for range 100 { // the port may linger briefly
		if ln, err = net.Listen("tcp", rc.addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(rc.t, err)
	rc.serve(ln)
}

func (rc *receiver) answer(status int, header http.Header) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status, rc.header = status, header
}

func (rc *receiver) snapshot() ([]received, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.requests...), append([]string(nil), rc.bad...)
}

// distinct returns the distinct event ids received, in the order of their first arrival.
func (rc *receiver) distinct() []string {
	reqs, _ := rc.snapshot()
	seen := map[string]bool{}
	var out []string
	for _, r := range reqs {
		for _, e := range r.Events {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e.ID)
			}
		}
	}
	return out
}

// waitDistinct waits until n distinct events arrived.
func (rc *receiver) waitDistinct(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(rc.distinct()) >= n }, waitFor, tick,
		"receiver got %d of %d events", len(rc.distinct()), n)
}

// checkDelivery asserts what arrived: exactly want (each at least once, nothing else), first
// arrivals in want's order, and every repeat a whole batch sent again under the same id (a batch
// whose acknowledgement did not come back), never an event repeated in a new batch.
func checkDelivery(t *testing.T, rc *receiver, want []string) {
	t.Helper()
	reqs, bad := rc.snapshot()
	require.Empty(t, bad, "the receiver refused requests")
	require.Equal(t, want, rc.distinct(), "every event once, in order")
	batches := map[string][]string{}
	firstBatch := map[string]string{}
	for _, r := range reqs {
		evIDs := make([]string, len(r.Events))
		for i, e := range r.Events {
			evIDs[i] = e.ID
		}
		if prev, ok := batches[r.BatchID]; ok {
			require.Equal(t, prev, evIDs, "a batch sent again holds the same events")
			continue
		}
		batches[r.BatchID] = evIDs
		for _, id := range evIDs {
			if b, ok := firstBatch[id]; ok {
				t.Fatalf("event %s arrived in batch %s and again in another batch %s", id, b, r.BatchID)
			}
			firstBatch[id] = r.BatchID
		}
	}
}

var errNot2xx = errors.New("not 2xx")
