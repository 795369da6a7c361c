package redrive

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/validator/worker"
)

// A redrive interrupted by a crash (after its claim, or after its publish) and run again completes
// once: the marker says what was claimed, the raw stream's per-message subject says whether it was
// published.
func TestRerunAfterACrashMidRedrive(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	wctx, cancel := context.WithCancel(ctx)
	w, err := worker.New(wctx, js, reg, worker.Config{BatchSize: 10, FetchWait: 100 * time.Millisecond}, log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r, err := New(ctx, js, log)
	require.NoError(t, err)

	// What earlier versions dead-lettered when the valid stream was full: a valid event.
	rec := &event.Record{ID: "01RERUN0000000000000000001", OrganizationID: "org_rerun", ReceivedAt: time.Now().UTC().Truncate(time.Millisecond),
		Event: event.Event{Action: "doc.read", OccurredAt: time.Now().UTC(), Actor: event.Entity{ID: "u", Type: "user"},
			Targets: []event.Entity{{ID: "d", Type: "doc"}}, Context: event.Context{Location: "127.0.0.1"}}}
	data, err := rec.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(event.RejectedSubject(rec.OrganizationID))
	m.Data = data
	m.Header.Set(event.HeaderRejectReason, "delivered 21 times without being settled; giving up")
	m.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
	ack, err := js.PublishMsg(ctx, m)
	require.NoError(t, err)
	key := markerKey(rec.OrganizationID, rec.ID)
	setMarker := func(state string, at time.Time) {
		raw, err := json.Marshal(marker{EventID: rec.ID, RejectedSeq: ack.Sequence, Floor: ack.Sequence, State: state,
			Schema: event.RedriveSchemaPinned, At: at})
		require.NoError(t, err)
		_, err = r.kv.Put(ctx, key, raw)
		require.NoError(t, err)
	}
	validCopies := func() int {
		s, err := js.Stream(ctx, event.StreamValid)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		return int(info.State.Msgs)
	}
	req := Request{Category: event.RejectDeliveryLimit}

	// Crashed right after the claim: the rerun publishes.
	setMarker("claimed", time.Now().UTC())
	rep, err := r.Run(ctx, req, "test")
	require.NoError(t, err)
	require.Len(t, rep.Events, 1)
	assert.Equal(t, Redriven, rep.Events[0].Outcome)
	assert.Equal(t, event.SideOutput, rep.Events[0].Side, "a delivery-limit reject was an output failure")
	require.Eventually(t, func() bool { return validCopies() == 1 }, 20*time.Second, 20*time.Millisecond)

	// Crashed after the publish, before the marker said so: the rerun finds it published.
	setMarker("claimed", time.Now().UTC())
	rep, err = r.Run(ctx, req, "test")
	require.NoError(t, err)
	assert.Equal(t, AlreadyRedriven, rep.Events[0].Outcome)
	entry, err := r.kv.Get(ctx, key)
	require.NoError(t, err)
	var got marker
	require.NoError(t, json.Unmarshal(entry.Value(), &got))
	assert.Equal(t, "published", got.State, "the rerun completes the marker")

	// A claim too old to complete safely is reported, not republished.
	setMarker("claimed", time.Now().UTC().Add(-ClaimHorizon-time.Hour))
	rep, err = r.Run(ctx, req, "test")
	require.NoError(t, err)
	assert.Equal(t, Failed, rep.Events[0].Outcome)
	assert.Contains(t, rep.Events[0].Detail, "too old to complete safely")
	assert.Equal(t, 1, rep.Failed)

	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, 1, validCopies(), "one copy, whatever the reruns")
}

// auditTrail keeps what it is asked to record, or refuses with err.
type auditTrail struct {
	entries []selfaudit.Entry
	err     error
}

func (a *auditTrail) Record(_ context.Context, e selfaudit.Entry) error {
	if a.err != nil {
		return a.err
	}
	a.entries = append(a.entries, e)
	return nil
}

// A redrive is recorded before it is carried out; a dry run is not recorded; a redrive that cannot
// be recorded changes nothing.
func TestRedriveIsRecordedFirst(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	r, err := New(ctx, js, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	trail := &auditTrail{}
	r.UseAudit(trail)
	_, err = r.Run(ctx, Request{DryRun: true}, "test")
	require.NoError(t, err)
	assert.Empty(t, trail.entries)
	_, err = r.Run(ctx, Request{Organization: "org_a", Reason: "schema"}, "test")
	require.NoError(t, err)
	require.Len(t, trail.entries, 1)
	assert.Equal(t, selfaudit.RejectedRedriven, trail.entries[0].Action)
	assert.Equal(t, "org_a", trail.entries[0].Targets[0].ID)
	assert.Equal(t, "schema", trail.entries[0].Metadata["reason"])

	trail.err = errors.New("audit trail unavailable")
	_, err = r.Run(ctx, Request{Organization: "org_a"}, "test")
	require.ErrorIs(t, err, trail.err)
}
