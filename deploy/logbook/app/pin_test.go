package app

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/logbookhq/logbook/validator/worker"
)

// An event answered 200 under a schema is stored under that schema: schemas registered between
// the gateway's answer and the validator's run (the validator held back here: not started yet)
// do not turn it into a dead letter. Real JetStream, registry, gateway and validator; the writer
// stores whatever the valid stream holds.
func TestAcceptedEventIsValidatedUnderTheSchemaItWasAcceptedUnder(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.DiscardHandler)
	reg, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	raw := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(raw.Close)
	rawStream, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	srv := wire.NewServer(log)
	gateway.New(raw, rawStream, reg, gateway.DefaultConfig(), log).Register(srv.Group(""))
	post := func(path string, body []byte) int {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code
	}
	// i must be a number for the schemas registered first, a string for those registered later.
	const numberI = `{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"i":{"type":"number"}}}}`
	const stringI = `{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"i":{"type":"string"}}}}`
	at := time.Now().Add(-time.Hour)
	accepted := 0
	emit := func(org, action string) {
		t.Helper()
		require.Equal(t, http.StatusOK, post("/audit_logs/events", eventBody(org, action, at, map[string]any{"i": 1})))
		accepted++
	}
	// a.none: no schema when accepted; the environment's v1 comes later and refuses it.
	emit("org_pin", "a.none")
	// a.env: the environment's v1 when accepted; org_pin's own v1 comes later and refuses it.
	require.Equal(t, http.StatusCreated, post("/audit_logs/actions/a.env/schemas", []byte(numberI)))
	emit("org_pin", "a.env")
	// a.next: v1 when accepted; v2, which it breaks, comes later.
	require.Equal(t, http.StatusCreated, post("/audit_logs/actions/a.next/schemas", []byte(numberI)))
	emit("org_pin", "a.next")

	require.Equal(t, http.StatusCreated, post("/audit_logs/actions/a.none/schemas", []byte(stringI)))
	require.Equal(t, http.StatusCreated, post("/organizations/org_pin/audit_logs/actions/a.env/schemas", []byte(stringI)))
	require.Equal(t, http.StatusCreated, post("/audit_logs/actions/a.next/schemas", []byte(stringI)))
	// The gateway now refuses a new event like them: the schemas are in force.
	for _, action := range []string{"a.none", "a.env"} {
		require.Equal(t, http.StatusBadRequest, post("/audit_logs/events", eventBody("org_pin", action, at, map[string]any{"i": 2})))
	}

	wctx, cancel := context.WithCancel(ctx)
	w, err := worker.New(wctx, js, reg, worker.Config{BatchSize: 50, FetchWait: 100 * time.Millisecond, AckWait: 30 * time.Second}, log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	count := func(name string) uint64 {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	cons, err := js.Consumer(ctx, event.StreamRaw, event.ConsumerValidator)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 20*time.Second, 20*time.Millisecond, "the validator settles every event")
	assert.Zero(t, count(event.StreamRejected), "no accepted event was rejected")
	assert.Equal(t, uint64(accepted), count(event.StreamValid), "every accepted event is valid")

	// A record that names no version (as before this change, or from another path) is still
	// judged by the schemas in force.
	rec := &event.Record{ID: "01OLDRECORD0000000000000000", OrganizationID: "org_pin", ReceivedAt: time.Now().UTC().Truncate(time.Millisecond),
		Event: event.Event{Action: "a.none", OccurredAt: at.UTC().Truncate(time.Millisecond), Actor: event.Entity{ID: "u", Type: "user"},
			Targets: []event.Entity{{ID: "t", Type: "team"}}, Context: event.Context{Location: "x"}, Metadata: map[string]any{"i": 1}}}
	data, err := rec.Marshal()
	require.NoError(t, err)
	_, err = js.Publish(ctx, event.RawSubject("org_pin"), data, jetstream.WithMsgID(rec.MsgID()))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return count(event.StreamRejected) == 1 }, 20*time.Second, 20*time.Millisecond)
}
