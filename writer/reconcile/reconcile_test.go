package reconcile_test

import (
	"context"
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
	data, err := r.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(subject)
	m.Data = data
	_, err = js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

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

	rep, err := reconcile.Run(ctx, js, st, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, rep.Organizations, 1)
	o := rep.Organizations[0]
	assert.False(t, rep.OK)
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
	rep, err := reconcile.Run(ctx, js, st, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	assert.True(t, rep.OK)
	assert.Equal(t, 1, rep.Organizations[0].Stored)
}
