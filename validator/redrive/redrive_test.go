package redrive_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/validator/redrive"
	"github.com/logbookhq/logbook/validator/worker"
)

const (
	action  = "invoice.paid"
	waitFor = 20 * time.Second
	tick    = 25 * time.Millisecond
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is real JetStream with Logbook's streams, a schema registry and a running validator.
type env struct {
	js  jetstream.JetStream
	reg *schema.Registry
	rd  *redrive.Redriver
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := natstest.New(t)
	ctx := context.Background()
	reg, err := schema.NewRegistry(ctx, js, quiet)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	wctx, cancel := context.WithCancel(ctx)
	w, err := worker.New(wctx, js, reg, worker.Config{BatchSize: 50, FetchWait: 100 * time.Millisecond}, quiet)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rd, err := redrive.New(ctx, js, quiet)
	require.NoError(t, err)
	return &env{js: js, reg: reg, rd: rd}
}

// register adds a version of action's schema whose metadata.amount must be of type typ.
func (e *env) register(t *testing.T, typ string) {
	t.Helper()
	d, err := schema.ParseDefinition([]byte(`{"targets":[{"type":"invoice"}],"metadata":{"type":"object","properties":{"amount":{"type":"` + typ + `"}}}}`))
	require.NoError(t, err)
	_, err = e.reg.Create(context.Background(), action, d)
	require.NoError(t, err)
}

func newRecord(t testing.TB, org string, amount any) *event.Record {
	t.Helper()
	var b [10]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &event.Record{
		ID: "01RD" + strings.ToUpper(hex.EncodeToString(b[:])), OrganizationID: org, ReceivedAt: now,
		Event: event.Event{Action: action, OccurredAt: now, Version: 1,
			Actor:   event.Entity{ID: "user_1", Type: "user"},
			Targets: []event.Entity{{ID: "inv_1", Type: "invoice"}}, Context: event.Context{Location: "203.0.113.7"},
			Metadata: map[string]any{"amount": amount}},
	}
}

func (e *env) publish(t testing.TB, rec *event.Record) {
	t.Helper()
	data, err := rec.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(event.RawSubject(rec.OrganizationID))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
	_, err = e.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

// msgs reads every message of stream.
func (e *env) msgs(t testing.TB, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// validCopies counts, per event id, the valid-stream messages holding it.
func (e *env) validCopies(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range e.msgs(t, event.StreamValid) {
		var r event.Record
		require.NoError(t, json.Unmarshal(m.Data, &r))
		out[r.ID]++
	}
	return out
}

func (e *env) count(t testing.TB, stream string) int { return len(e.msgs(t, stream)) }

// drained waits until the validator has settled everything in the raw stream.
func (e *env) drained(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := e.js.Consumer(context.Background(), event.StreamRaw, event.ConsumerValidator)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, tick)
}

func ids(recs []*event.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func eventIDs(rep *redrive.Report, outcome string) []string {
	var out []string
	for _, e := range rep.Events {
		if e.Outcome == outcome {
			out = append(out, e.EventID)
		}
	}
	return out
}

// The operator's path: events rejected for a schema mistake, the schema fixed with a new version, a
// dry run to see what would happen, the redrive by organization and reason, then the same redrive
// again by mistake. Each event passes validation exactly once; the dry run and the second redrive
// change nothing; other organizations' and other reasons' rejects stay where they are.
func TestRedriveAfterFixingTheSchemaPassesEachEventOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(t, "integer") // the mistake: amounts are sent as strings
	var bad, otherOrg []*event.Record
	for i := 0; i < 5; i++ {
		r := newRecord(t, "org_billing", "12.50")
		e.publish(t, r)
		bad = append(bad, r)
	}
	for i := 0; i < 2; i++ {
		r := newRecord(t, "org_other", "3.00")
		e.publish(t, r)
		otherOrg = append(otherOrg, r)
	}
	unknown := newRecord(t, "org_billing", 7)
	unknown.Event.Version = 9 // a different reason
	e.publish(t, unknown)
	require.Eventually(t, func() bool { return e.count(t, event.StreamRejected) == 8 }, waitFor, tick)
	e.drained(t)
	for _, m := range e.msgs(t, event.StreamRejected) {
		assert.Equal(t, event.SideInput, m.Header.Get(event.HeaderRejectSide))
		assert.Contains(t, []string{event.RejectSchemaViolation, event.RejectUnknownVersion}, m.Header.Get(event.HeaderRejectCategory))
	}

	e.register(t, "string") // the fix: version 2
	req := redrive.Request{Organization: "org_billing", Reason: "Schema Violation", DryRun: true}
	rawBefore := e.count(t, event.StreamRaw)
	dry, err := e.rd.Run(ctx, req, "test")
	require.NoError(t, err)
	assert.Equal(t, 5, dry.Matched)
	assert.Equal(t, 5, dry.Redriven, "a dry run counts what would be redriven")
	assert.ElementsMatch(t, ids(bad), eventIDs(dry, redrive.WouldRedrive))
	assert.Equal(t, map[string]int{event.RejectSchemaViolation: 5}, dry.ByCategory)
	assert.Equal(t, map[string]int{"org_billing": 5}, dry.ByOrganization)
	for _, ev := range dry.Events {
		assert.Equal(t, event.RedriveSchemaCurrent, ev.Schema, "schema violations default to the current schema")
	}
	assert.Equal(t, rawBefore, e.count(t, event.StreamRaw), "a dry run publishes nothing")
	keys, err := e.js.KeyValue(ctx, event.BucketRedrives)
	require.NoError(t, err)
	lister, err := keys.ListKeys(ctx)
	require.NoError(t, err)
	n := 0
	for range lister.Keys() {
		n++
	}
	assert.Zero(t, n, "a dry run marks nothing")

	req.DryRun = false
	rep, err := e.rd.Run(ctx, req, "test")
	require.NoError(t, err)
	assert.Equal(t, 5, rep.Redriven)
	assert.ElementsMatch(t, ids(bad), eventIDs(rep, redrive.Redriven))
	require.Eventually(t, func() bool { return len(e.validCopies(t)) == 5 }, waitFor, tick)
	e.drained(t)

	again, err := e.rd.Run(ctx, req, "test")
	require.NoError(t, err)
	assert.Zero(t, again.Redriven)
	assert.Equal(t, 5, again.AlreadyRedriven)
	e.drained(t)

	copies := e.validCopies(t)
	assert.Len(t, copies, 5)
	for _, r := range bad {
		assert.Equal(t, 1, copies[r.ID], r.ID)
	}
	for _, r := range append(otherOrg, unknown) {
		assert.Zero(t, copies[r.ID], "not chosen: %s", r.ID)
	}
	for _, m := range e.msgs(t, event.StreamValid) {
		assert.Equal(t, event.RedriveSchemaCurrent, m.Header.Get(event.HeaderRedriveSchema), "the choice is on record")
		assert.NotEmpty(t, m.Header.Get(event.HeaderRedriveOf))
	}
	assert.Equal(t, 8, e.count(t, event.StreamRejected), "the rejected stream keeps its record of the rejects")
}

// Two redrives of the same messages at once store each event once.
func TestConcurrentRedrivesPassEachEventOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(t, "integer")
	var bad []*event.Record
	for i := 0; i < 20; i++ {
		r := newRecord(t, "org_race", "x")
		e.publish(t, r)
		bad = append(bad, r)
	}
	require.Eventually(t, func() bool { return e.count(t, event.StreamRejected) == 20 }, waitFor, tick)
	e.register(t, "string")

	reps := make([]*redrive.Report, 3)
	var wg sync.WaitGroup
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := e.rd.Run(ctx, redrive.Request{Organization: "org_race"}, "test")
			assert.NoError(t, err)
			reps[i] = rep
		}()
	}
	wg.Wait()
	total := 0
	for _, rep := range reps {
		require.NotNil(t, rep)
		assert.Zero(t, rep.Failed)
		assert.Equal(t, 20, rep.Redriven+rep.AlreadyRedriven)
		total += rep.Redriven
	}
	assert.Equal(t, 20, total, "each message is redriven by exactly one of the calls")
	require.Eventually(t, func() bool { return len(e.validCopies(t)) == 20 }, waitFor, tick)
	e.drained(t)
	for id, n := range e.validCopies(t) {
		assert.Equal(t, 1, n, id)
	}
}

// A redrive against the pinned schema that is rejected again can be redriven again, against the
// current one; the original rejects stay redriven once.
func TestRejectedAgainCanBeRedrivenAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register(t, "integer")
	var bad []*event.Record
	for i := 0; i < 3; i++ {
		r := newRecord(t, "org_chain", "x")
		e.publish(t, r)
		bad = append(bad, r)
	}
	require.Eventually(t, func() bool { return e.count(t, event.StreamRejected) == 3 }, waitFor, tick)
	e.register(t, "string")

	first, err := e.rd.Run(ctx, redrive.Request{Organization: "org_chain", Schema: event.RedriveSchemaPinned}, "test")
	require.NoError(t, err)
	assert.Equal(t, 3, first.Redriven)
	require.Eventually(t, func() bool { return e.count(t, event.StreamRejected) == 6 }, waitFor, tick, "rejected again under the pinned version")
	e.drained(t)
	assert.Empty(t, e.validCopies(t))
	for _, m := range e.msgs(t, event.StreamRejected)[3:] {
		assert.NotEmpty(t, m.Header.Get(event.HeaderRedriveOf), "a re-reject names the redrive")
		assert.Equal(t, event.RedriveSchemaPinned, m.Header.Get(event.HeaderRedriveSchema))
	}

	second, err := e.rd.Run(ctx, redrive.Request{Organization: "org_chain"}, "test")
	require.NoError(t, err)
	assert.Equal(t, 6, second.Matched)
	assert.Equal(t, 3, second.Redriven, "the re-rejects")
	assert.Equal(t, 3, second.AlreadyRedriven, "the original rejects")
	require.Eventually(t, func() bool { return len(e.validCopies(t)) == 3 }, waitFor, tick)
	e.drained(t)
	for _, r := range bad {
		assert.Equal(t, 1, e.validCopies(t)[r.ID])
	}
}

// An event ClickHouse refused (the writer's reject) already sits in the valid stream under its
// own id; its redrive must not be swallowed by the valid stream's duplicate window.
func TestWriterRejectIsRedrivenPastTheDuplicateWindow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := newRecord(t, "org_store", "1")
	data, err := r.Marshal()
	require.NoError(t, err)
	valid := nats.NewMsg(event.ValidSubject(r.OrganizationID))
	valid.Data = data
	valid.Header.Set(jetstream.MsgIDHeader, r.MsgID())
	_, err = e.js.PublishMsg(ctx, valid)
	require.NoError(t, err)
	rej := nats.NewMsg(event.RejectedSubject(r.OrganizationID)) // as writer/batcher rejects a row
	rej.Data = data
	rej.Header.Set(event.HeaderRejectReason, "clickhouse refused the row: Code: 6. Cannot parse string")
	rej.Header.Set(jetstream.MsgIDHeader, "writer:"+r.MsgID())
	_, err = e.js.PublishMsg(ctx, rej)
	require.NoError(t, err)

	rep, err := e.rd.Run(ctx, redrive.Request{Category: event.RejectStoreRefused}, "test")
	require.NoError(t, err)
	require.Equal(t, 1, rep.Redriven)
	assert.Equal(t, event.RedriveSchemaPinned, rep.Events[0].Schema)
	require.Eventually(t, func() bool { return e.count(t, event.StreamValid) == 2 }, waitFor, tick)
	e.drained(t)
	last := e.msgs(t, event.StreamValid)[1]
	assert.Equal(t, r.RedriveMsgID("1"), last.Header.Get(jetstream.MsgIDHeader))
	assert.Equal(t, data, last.Data, "the record is passed on unchanged")
}

func TestRequestValidation(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	req, _, err := redrive.ParseRequest([]byte(`{"organization_id":"org_a","since":"2h","until":"2026-11-02T11:30:00Z","reason":"x","dry_run":true}`), now)
	require.NoError(t, err)
	assert.Equal(t, now.Add(-2*time.Hour), req.Since)
	assert.Equal(t, now.Add(-30*time.Minute), req.Until)
	assert.True(t, req.DryRun)
	empty, _, err := redrive.ParseRequest(nil, now)
	require.NoError(t, err)
	assert.Equal(t, redrive.Request{}, empty)

	tests := []struct {
		body, field string
	}{
		{`{"organization_id":"org.a"}`, "organization_id"},
		{`{"since":"yesterday"}`, "since"},
		{`{"since":"1h","until":"2h"}`, "until"},
		{`{"category":"nope"}`, "category"},
		{`{"schema":"latest"}`, "schema"},
		{`{"limit":1000000}`, "limit"},
		{`{"organisation_id":"org_a"}`, "body"},
		{`[1]`, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			req, field, err := redrive.ParseRequest([]byte(tt.body), now)
			if err == nil {
				field, err = req.Validate()
			}
			require.Error(t, err)
			assert.Equal(t, tt.field, field)
		})
	}
}
