package app

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

// Rejected events redriven after the schema was fixed are stored exactly once: a dry run changes
// nothing, the redrive stores each, and the same redrive again stores nothing new.
func TestRedriveAfterFixingTheSchemaStoresEachEventOnce(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	ctx := context.Background()
	const org, action = "org_redrive", "invoice.paid"
	schemaBody := func(typ string) []byte {
		return []byte(`{"targets":[{"type":"invoice"}],"metadata":{"type":"object","properties":{"amount":{"type":"` + typ + `"}}}}`)
	}
	require.Equal(t, 201, c.do("POST", "/audit_logs/actions/"+action+"/schemas", schemaBody("integer")).status)

	// Events that reached the raw stream before the gateway knew the schema (or on another path):
	// the validator rejects them.
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	var ids []string
	for i := 0; i < 6; i++ {
		now := time.Now().UTC().Truncate(time.Millisecond)
		rec := &event.Record{ID: fmt.Sprintf("01REDRIVE%016d", i), OrganizationID: org, ReceivedAt: now,
			Event: event.Event{Action: action, OccurredAt: now, Version: 1, Actor: event.Entity{ID: "u", Type: "user"},
				Targets: []event.Entity{{ID: "inv", Type: "invoice"}}, Context: event.Context{Location: "127.0.0.1"},
				Metadata: map[string]any{"amount": "12.50"}}}
		data, err := rec.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.RawSubject(org))
		m.Data = data
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)
		ids = append(ids, rec.ID)
	}
	rejected := func() uint64 {
		s, err := js.Stream(ctx, event.StreamRejected)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	require.Eventually(t, func() bool { return rejected() == 6 }, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 201, c.do("POST", "/audit_logs/actions/"+action+"/schemas", schemaBody("string")).status)

	redrive := func(body string) map[string]any {
		r := c.do("POST", "/admin/rejected/redrive", []byte(body))
		require.Equal(t, 200, r.status, "%s", r.raw)
		return r.body
	}
	dry := redrive(`{"organization_id":"` + org + `","reason":"schema violation","dry_run":true}`)
	assert.Equal(t, float64(6), dry["matched"])
	assert.Equal(t, float64(6), dry["redriven"], "what would be redriven")
	assert.Equal(t, map[string]any{event.RejectSchemaViolation: float64(6)}, dry["by_category"])
	time.Sleep(time.Second)
	total, _, err := a.Store().Count(ctx, org)
	require.NoError(t, err)
	assert.Zero(t, total, "a dry run stores nothing")

	rep := redrive(`{"organization_id":"` + org + `","reason":"schema violation"}`)
	assert.Equal(t, float64(6), rep["redriven"])
	var listed []string
	for _, e := range rep["events"].([]any) {
		ev := e.(map[string]any)
		listed = append(listed, ev["event_id"].(string))
		assert.Equal(t, "current", ev["schema"])
	}
	assert.ElementsMatch(t, ids, listed, "the answer lists the ids")
	c.waitFor(org, 6)

	again := redrive(`{"organization_id":"` + org + `","reason":"schema violation"}`)
	assert.Zero(t, again["redriven"])
	assert.Equal(t, float64(6), again["already_redriven"])
	time.Sleep(time.Second) // a second copy would be stored by now
	total, distinct, err := a.Store().Count(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, uint64(6), total, "rows inserted")
	assert.Equal(t, uint64(6), distinct)

	assert.Equal(t, uint64(6), validCopies(t, js, org), "one valid copy each: nothing for the writer to store twice")

	bad := c.do("POST", "/admin/rejected/redrive", []byte(`{"schema":"latest"}`))
	assert.Equal(t, 400, bad.status)
	assert.Equal(t, "invalid_request", bad.body["code"])
	unauth := a.client(t, "")
	assert.Equal(t, 401, unauth.do("POST", "/admin/rejected/redrive", []byte(`{}`)).status, "behind the API key")
}

// LOGBOOK_VALIDATORS runs several validator loops on the shared consumer; with a short ack wait,
// every event is validated and stored once.
func TestTwoValidatorLoopsStoreEachEventOnce(t *testing.T) {
	cfg := ConfigFromEnv(config.FromMap(map[string]string{
		"LOGBOOK_DATA_DIR": t.TempDir(), "LOGBOOK_ADDR": "127.0.0.1:0", "LOGBOOK_API_KEY": testKey,
		"LOGBOOK_BATCH_WAIT": "50ms", "LOGBOOK_VALIDATORS": "2", "LOGBOOK_VALIDATOR_ACK_WAIT": "1s",
	}))
	require.Equal(t, 2, cfg.Valid.Loops)
	a, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	c := a.client(t, testKey)
	const org, n = "org_loops", 200
	for i := 0; i < n; i++ {
		c.emit(org, time.Now(), i)
	}
	c.waitFor(org, n)
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	assert.Equal(t, uint64(n), validCopies(t, js, org), "one valid copy per event")
	total, distinct, err := a.Store().Count(context.Background(), org)
	require.NoError(t, err)
	assert.Equal(t, uint64(n), total)
	assert.Equal(t, uint64(n), distinct)
}

// validCopies counts org's messages in the valid stream (Logbook's own records go to org_logbook).
func validCopies(t *testing.T, js jetstream.JetStream, org string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), event.StreamValid)
	require.NoError(t, err)
	subject := event.ValidSubject(org)
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}
