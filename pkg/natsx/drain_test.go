package natsx_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// Acks sent just before DrainAndWait reach the server: nothing is redelivered afterwards.
func TestDrainAndWaitDeliversTheLastAcks(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamValid, jetstream.ConsumerConfig{
		Durable: "drain-test", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second,
	})
	require.NoError(t, err)
	for i := 0; i < 50; i++ {
		_, err := js.Publish(ctx, event.ValidSubject("org_a"), []byte("x"))
		require.NoError(t, err)
	}
	nc, js2, err := natsx.ConnectInProcess(ns, "drain")
	require.NoError(t, err)
	c2, err := js2.Consumer(ctx, event.StreamValid, "drain-test")
	require.NoError(t, err)
	batch, err := c2.Fetch(50, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	n := 0
	for m := range batch.Messages() {
		require.NoError(t, m.Ack()) // fire and forget
		n++
	}
	require.Equal(t, 50, n)
	require.NoError(t, natsx.DrainAndWait(nc, 5*time.Second))
	assert.True(t, nc.IsClosed())
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	assert.Zero(t, info.NumAckPending, "every ack arrived")
	assert.Equal(t, uint64(50), info.AckFloor.Consumer)
	require.NoError(t, natsx.DrainAndWait(nc, time.Second), "a closed connection drains at once")
}
