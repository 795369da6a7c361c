package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/writer/reconcile"
)

func rec(org, id string) *event.Record {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return &event.Record{ID: id, OrganizationID: org, ReceivedAt: now, Event: event.Event{
		Action: "a.b", OccurredAt: now, Actor: event.Entity{ID: "u", Type: "user"}, Targets: []event.Entity{},
		Context: event.Context{Location: "x"}}}
}

func publish(t *testing.T, js jetstream.JetStream, subject string, r *event.Record) {
	publishWith(t, js, subject, r, nil)
}

func publishWith(t *testing.T, js jetstream.JetStream, subject string, r *event.Record, h nats.Header) {
	t.Helper()
	data, err := r.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range h {
		m.Header[k] = v
	}
	_, err = js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

func reason(r string) nats.Header { return nats.Header{event.HeaderRejectReason: []string{r}} }

// settle acks the first n messages of stream through the named durable consumer.
func settle(t *testing.T, js jetstream.JetStream, stream, name string, n int) {
	c, err := js.CreateOrUpdateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	if n == 0 {
		return
	}
	b, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	for m := range b.Messages() {
		require.NoError(t, m.DoubleAck(context.Background()))
	}
}

func TestReconcileNamesGapsAndDuplicates(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	e := map[string]*event.Record{}
	for _, id := range []string{"e1", "e2", "e3", "e4", "e5", "e6"} {
		e[id] = rec(org, "01RECON"+id)
	}
	for _, id := range []string{"e1", "e2", "e3", "e4", "e5", "e6"} {
		publish(t, js, event.RawSubject(org), e[id])
	}
	for _, id := range []string{"e1", "e2", "e3", "e6"} {
		publish(t, js, event.ValidSubject(org), e[id])
	}
	publish(t, js, event.RejectedSubject(org), e["e5"])
	settle(t, js, event.StreamRaw, event.ConsumerValidator, 6)
	settle(t, js, event.StreamValid, event.ConsumerWriter, 3) // e6 still with the writer
	require.NoError(t, st.Insert(ctx, "recon:"+org+":1", []*event.Record{e["e1"], e["e2"]}))
	require.NoError(t, st.Insert(ctx, "recon:"+org+":2", []*event.Record{e["e2"]})) // a duplicate

	rep, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: time.Now().Add(-time.Hour), Org: org})
	require.NoError(t, err)
	require.Len(t, rep.Organizations, 1)
	o := rep.Organizations[0]
	assert.False(t, rep.OK)
	assert.Equal(t, 2, o.Lost, "e4 and e3")
	assert.Equal(t, 1, o.InFlight)
	assert.Equal(t, 6, o.Accepted)
	assert.Equal(t, 4, o.Valid)
	assert.Equal(t, 1, o.Rejected)
	assert.Equal(t, 2, o.Stored)
	assert.Equal(t, []string{e["e4"].ID}, o.Unvalidated, "accepted, settled by the validator, in no stream after it")
	assert.Equal(t, []string{e["e3"].ID}, o.Missing, "valid, settled by the writer, not stored")
	assert.Equal(t, []string{e["e2"].ID}, o.Duplicated)
	assert.Equal(t, 1, o.Pending, "e6 is in flight at the writer, not lost")
	assert.Empty(t, o.Unknown)
}

func TestReconcileCleanPipelineIsOK(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	r := rec(org, "01RECONOK")
	publish(t, js, event.RawSubject(org), r)
	publish(t, js, event.ValidSubject(org), r)
	settle(t, js, event.StreamRaw, event.ConsumerValidator, 1)
	settle(t, js, event.StreamValid, event.ConsumerWriter, 1)
	require.NoError(t, st.Insert(ctx, "recon:"+org, []*event.Record{r}))
	rep, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: time.Now().Add(-time.Hour), Org: org})
	require.NoError(t, err)
	assert.True(t, rep.OK)
	assert.Equal(t, 1, rep.Organizations[0].Stored)
}

// Issue 9 item 11: rejections are reported by reason category and side. An event dead-lettered for
// an output-side failure (retries exhausted: the validator gave up on a valid event because its
// output kept failing) and never redriven is a loss, and the report is not OK; before, it counted
// as "rejected" and the report said ok. Input-side rejections are no failure; a rejected event
// that was redriven and stored counts as redriven; a row the writer had ClickHouse refuse is
// rejected, not missing.
func TestReconcileReportsRejectionsBySide(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	gaveUp, schemaBad, redriven, refused := rec(org, "01SIDEgaveup"), rec(org, "01SIDEschema"), rec(org, "01SIDEredriven"), rec(org, "01SIDErefused")
	for _, r := range []*event.Record{gaveUp, schemaBad, redriven, refused} {
		publish(t, js, event.RawSubject(org), r)
	}
	giveUp := reason("delivered 21 times without being settled; giving up")
	publishWith(t, js, event.RejectedSubject(org), gaveUp, giveUp)
	publishWith(t, js, event.RejectedSubject(org), schemaBad, reason(`schema violation: [{"field":"metadata"}]`))
	publishWith(t, js, event.RejectedSubject(org), redriven, giveUp)
	publish(t, js, event.ValidSubject(org), redriven) // put back through validation later
	publish(t, js, event.ValidSubject(org), refused)
	publishWith(t, js, event.RejectedSubject(org), refused, reason("clickhouse refused the row: Code: 41. DB::Exception: Cannot parse datetime"))
	settle(t, js, event.StreamRaw, event.ConsumerValidator, 4)
	settle(t, js, event.StreamValid, event.ConsumerWriter, 2)
	require.NoError(t, st.Insert(ctx, "side:"+org, []*event.Record{redriven}))

	rep, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: time.Now().Add(-time.Hour), Org: org})
	require.NoError(t, err)
	require.Len(t, rep.Organizations, 1)
	o := rep.Organizations[0]
	assert.False(t, rep.OK, "an output-side rejection is a loss")
	assert.Equal(t, 4, o.Rejected)
	assert.Equal(t, 2, o.RejectedOutput)
	assert.Equal(t, 2, o.RejectedInput)
	assert.Equal(t, map[string]int{event.RejectDeliveryLimit: 2, event.RejectSchemaViolation: 1, event.RejectStoreRefused: 1}, o.RejectedBy)
	assert.Equal(t, 1, o.Redriven)
	assert.Equal(t, []string{gaveUp.ID}, o.RejectedOutputIDs)
	assert.Equal(t, 1, o.Lost)
	assert.Empty(t, o.Missing, "the refused row is rejected, not missing")
	assert.Empty(t, o.Unvalidated)

	// A producer-side header overrides the reason's side.
	org2 := storetest.NewOrg(t)
	e := rec(org2, "01SIDEheader")
	publish(t, js, event.RawSubject(org2), e)
	publishWith(t, js, event.RejectedSubject(org2), e, nats.Header{event.HeaderRejectReason: []string{"schemas unreachable"},
		event.HeaderRejectSide: []string{"output"}})
	settle(t, js, event.StreamRaw, event.ConsumerValidator, 5)
	rep, err = reconcile.Run(ctx, js, st, reconcile.Options{Since: time.Now().Add(-time.Hour), Org: org2})
	require.NoError(t, err)
	require.Len(t, rep.Organizations, 1)
	assert.Equal(t, 1, rep.Organizations[0].RejectedOutput)
	assert.Equal(t, []string{e.ID}, rep.Organizations[0].RejectedOutputIDs)
}

// Issue 9 item 11: reconciliation holds one receive-time window of events at a time, and gives the
// same answer as one window over everything: here 6 windows of about 40 events each.
func TestReconcileWorksInWindows(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	since := time.Now().Add(-time.Second)
	var stored []*event.Record
	lost := 0
	for w := 0; w < 6; w++ {
		for i := 0; i < 40; i++ {
			r := rec(org, fmt.Sprintf("01WIN%02d%04d", w, i))
			r.ReceivedAt = time.Now().UTC().Truncate(time.Millisecond)
			publish(t, js, event.RawSubject(org), r)
			publish(t, js, event.ValidSubject(org), r)
			if i == 7 && w%2 == 0 {
				lost++ // valid, settled by the writer, never stored
				continue
			}
			stored = append(stored, r)
		}
		time.Sleep(300 * time.Millisecond)
	}
	settle(t, js, event.StreamRaw, event.ConsumerValidator, 240)
	settle(t, js, event.StreamValid, event.ConsumerWriter, 240)
	require.NoError(t, st.Insert(ctx, "windows:"+org, stored))

	whole, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: since, Window: time.Hour, Org: org})
	require.NoError(t, err)
	windowed, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: since, Window: 300 * time.Millisecond, Org: org})
	require.NoError(t, err)
	assert.Equal(t, 1, whole.Cost.Windows)
	assert.GreaterOrEqual(t, windowed.Cost.Windows, 6)
	assert.Less(t, windowed.Cost.PeakWindowEvents, 120, "a window holds a window's events, not all 240")
	assert.Equal(t, 240, whole.Cost.PeakWindowEvents)
	require.Len(t, windowed.Organizations, 1)
	o := windowed.Organizations[0]
	assert.Equal(t, 240, o.Accepted)
	assert.Equal(t, 240, o.Valid)
	assert.Equal(t, 240-lost, o.Stored)
	assert.Equal(t, lost, o.MissingN)
	assert.Equal(t, lost, o.Lost)
	assert.Equal(t, whole.Organizations[0].Missing, o.Missing)
	assert.False(t, windowed.OK)
}
