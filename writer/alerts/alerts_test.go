package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/writer/alerts"
)

const (
	waitFor = 30 * time.Second
	tick    = 20 * time.Millisecond
)

type env struct {
	ns      *server.Server
	js      jetstream.JetStream
	st      *alertrule.Store
	streams *logstream.Store
}

func newEnv(t *testing.T) *env {
	ns, js := natstest.New(t)
	ctx := context.Background()
	require.NoError(t, alertrule.EnsureBuckets(ctx, js, 1))
	require.NoError(t, logstream.EnsureBucket(ctx, js, 1))
	st, err := alertrule.Open(ctx, js)
	require.NoError(t, err)
	streams, err := logstream.Open(ctx, js)
	require.NoError(t, err)
	return &env{ns: ns, js: js, st: st, streams: streams}
}

func testConfig() alerts.Config {
	c := alerts.DefaultConfig()
	c.RetryInitial, c.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	return c
}

// start runs an evaluator and a deliverer on a connection of their own until stop.
func (e *env) start(t *testing.T) (stop func()) {
	t.Helper()
	nc, js, err := natsx.ConnectInProcess(e.ns, "alerts")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := alertrule.Open(ctx, js)
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ev, err := alerts.NewEvaluator(ctx, js, st, testConfig(), log)
	require.NoError(t, err)
	rec := logstream.RawRecorder{Pub: js, NewID: func(t time.Time) string { return ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String() }}
	dl := alerts.NewDeliverer(st, e.streams, rec, testConfig(), log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = ev.Run(ctx) }()
	go func() { defer wg.Done(); _ = dl.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait(); nc.Close() }) }
	t.Cleanup(stop)
	return stop
}

func (e *env) addRule(t *testing.T, r alertrule.Rule, sec alertrule.Secrets) *alertrule.Rule {
	t.Helper()
	r.ID = alertrule.IDPrefix + ulid.Make().String()
	if r.State == "" {
		r.State = logstream.StateActive
	}
	if r.Name == "" {
		r.Name = "rule"
	}
	r.CreatedAt, r.UpdatedAt = time.Now().UTC(), time.Now().UTC()
	require.NoError(t, alertrule.Validate(&r, &sec))
	require.NoError(t, e.st.Put(context.Background(), &r, &sec, 0))
	return &r
}

var seq atomic.Int64

// emit publishes an event to the valid stream as the validator does.
func (e *env) emit(t *testing.T, org, action, actor string, meta map[string]any) string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	r := &event.Record{ID: ulid.Make().String() + fmt.Sprintf("%04d", seq.Add(1)%10000), OrganizationID: org, ReceivedAt: now,
		Event: event.Event{Action: action, OccurredAt: now, Actor: event.Entity{ID: actor, Type: "user"},
			Targets: []event.Entity{{ID: "app", Type: "application"}}, Context: event.Context{Location: "198.51.100.7"}, Metadata: meta}}
	data, err := r.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(event.ValidSubject(org))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, r.MsgID())
	_, err = e.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	return r.ID
}

// hook is a webhook receiver that verifies each firing's signature.
type hook struct {
	mu      sync.Mutex
	firings []alertrule.Firing
	ids     map[string]int
	srv     *httptest.Server
}

func newHook(t *testing.T, secret string) *hook {
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	h := &hook{ids: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if wh.Verify(body, r.Header) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var f alertrule.Firing
		if json.Unmarshal(body, &f) != nil || r.Header.Get("webhook-id") != f.ID {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.ids[f.ID] == 0 {
			h.firings = append(h.firings, f)
		}
		h.ids[f.ID]++
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) got() []alertrule.Firing {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]alertrule.Firing(nil), h.firings...)
}

// Brute force: 5 failed logins by one actor within a minute fire once, per actor; the cool-down
// silences further matches; the window survives a restart of the evaluator (JetStream KV); each
// firing is signed, recorded as delivered, and on record in org_logbook.
func TestThresholdRuleFiresPerActorAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	h := newHook(t, secret)
	org := "org_alerts_" + ulid.Make().String()[20:]
	r := e.addRule(t, alertrule.Rule{OrganizationID: org, Name: "Brute force",
		Match:           alertrule.Match{Actions: []string{"user.login_failed"}},
		Threshold:       &alertrule.Threshold{Count: 5, WindowSeconds: 60, GroupBy: alertrule.GroupActor},
		CooldownSeconds: 600,
		Destination:     alertrule.Destination{Type: alertrule.DestWebhook, URL: h.srv.URL}},
		alertrule.Secrets{SigningSecret: secret})
	stop := e.start(t)
	for range 4 {
		e.emit(t, org, "user.login_failed", "user_a", nil)
	}
	e.emit(t, org, "user.signed_in", "user_a", nil)       // another action: no match
	e.emit(t, "org_other", "user.login_failed", "x", nil) // another organization
	var bIDs []string
	for range 5 {
		bIDs = append(bIDs, e.emit(t, org, "user.login_failed", "user_b", nil))
	}
	require.Eventually(t, func() bool { return len(h.got()) == 1 }, waitFor, tick)
	f := h.got()[0]
	assert.Equal(t, r.ID, f.RuleID)
	assert.Equal(t, "user:user_b", f.Group)
	assert.Equal(t, bIDs, f.EventIDs)

	stop() // the evaluator stops with user_a's four failures in its window
	e.start(t)
	e.emit(t, org, "user.login_failed", "user_a", nil)
	require.Eventually(t, func() bool { return len(h.got()) == 2 }, waitFor, tick, "the window survived the restart")
	assert.Equal(t, "user:user_a", h.got()[1].Group)
	for range 6 {
		e.emit(t, org, "user.login_failed", "user_b", nil) // within user_b's cool-down
	}
	time.Sleep(500 * time.Millisecond)
	assert.Len(t, h.got(), 2, "the cool-down holds")

	require.Eventually(t, func() bool {
		fs, err := e.st.Firings(context.Background(), r.ID, 10)
		return err == nil && len(fs) == 2 && fs[0].Delivered != nil && fs[1].Delivered != nil
	}, waitFor, tick, "firings are recorded as delivered")
	// On record in Logbook's own organization (the raw stream, validated and stored like any event).
	raw, err := e.js.Stream(context.Background(), event.StreamRaw)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := raw.Info(context.Background(), jetstream.WithSubjectFilter(event.RawSubject(logstream.AuditOrg)))
		return err == nil && info.State.Msgs == 2
	}, waitFor, tick)
}

// A single-event rule (action prefix and a metadata value) fires on every match, delivered through
// a log stream's destination as an org_logbook audit event; a destination that fails at first is
// retried until it accepts.
func TestEventRuleDeliversThroughLogStream(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	var mu sync.Mutex
	var got []map[string]any
	var refuse atomic.Int32
	refuse.Store(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		require.NoError(t, wh.Verify(body, r.Header))
		var evs []map[string]any
		require.NoError(t, json.Unmarshal(body, &evs))
		mu.Lock()
		got = append(got, evs...)
		mu.Unlock()
	}))
	defer srv.Close()
	ls := logstream.Stream{ID: logstream.IDPrefix + ulid.Make().String(), Name: "alerts", State: logstream.StatePaused,
		OrganizationID: logstream.AuditOrg, Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: srv.URL}}
	sec := logstream.Secrets{SigningSecret: secret}
	require.NoError(t, logstream.Validate(&ls, &sec))
	require.NoError(t, e.streams.Create(context.Background(), &ls, &sec, logstream.Start{}))
	org := "org_alerts_" + ulid.Make().String()[20:]
	r := e.addRule(t, alertrule.Rule{OrganizationID: org, Name: "Admin granted",
		Match:       alertrule.Match{Actions: []string{"role.*"}, Metadata: map[string]string{"role": "admin"}},
		Destination: alertrule.Destination{Type: alertrule.DestLogStream, LogStreamID: ls.ID}}, alertrule.Secrets{})
	e.start(t)
	e.emit(t, org, "role.granted", "user_a", map[string]any{"role": "viewer"})
	id := e.emit(t, org, "role.granted", "user_a", map[string]any{"role": "admin"})
	e.emit(t, org, "user.created", "user_a", map[string]any{"role": "admin"})
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 }, waitFor, tick)
	mu.Lock()
	ev := got[0]
	mu.Unlock()
	assert.Equal(t, "logbook.alert.fired", ev["action"])
	assert.Equal(t, logstream.AuditOrg, ev["organization_id"])
	meta := ev["metadata"].(map[string]any)
	assert.Equal(t, id, meta["last_event_id"])
	assert.Contains(t, fmt.Sprint(ev["targets"]), r.ID)
}
