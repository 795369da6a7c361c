package settle_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/settle"
)

func consumer(t *testing.T, js jetstream.JetStream, stream, name string) jetstream.Consumer {
	t.Helper()
	c, err := js.CreateOrUpdateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
	})
	require.NoError(t, err)
	return c
}

// A point is stored only once the validator has acknowledged every raw message up to it (not
// just the latest) and the writer every valid message up to what the valid stream held then.
func TestPointSettlesThroughBothConsumers(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	w := settle.New(js)

	empty, err := w.Mark(ctx)
	require.NoError(t, err)
	done, err := w.Step(ctx, &empty)
	require.NoError(t, err)
	assert.True(t, done, "nothing acknowledged, nothing to wait for")

	for range 3 {
		_, err := js.Publish(ctx, event.RawSubject("org_a"), []byte("raw"))
		require.NoError(t, err)
	}
	p, err := w.Mark(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), p.Raw)

	done, err = w.Step(ctx, &p)
	require.NoError(t, err)
	assert.False(t, done, "no validator consumer yet")

	val := consumer(t, js, event.StreamRaw, event.ConsumerValidator)
	raw := natstest.Fetch(t, val, 3)
	for range 3 { // the validator republishes, then acks
		_, err := js.Publish(ctx, event.ValidSubject("org_a"), []byte("valid"))
		require.NoError(t, err)
	}
	require.NoError(t, raw[2].DoubleAck(ctx))
	require.NoError(t, raw[1].DoubleAck(ctx))
	done, err = w.Step(ctx, &p)
	require.NoError(t, err)
	assert.False(t, done)
	assert.False(t, p.ValidSet, "raw seq 1 is not acknowledged: the ack floor is below the point")
	require.NoError(t, raw[0].DoubleAck(ctx))

	// Later traffic does not move the point.
	_, err = js.Publish(ctx, event.RawSubject("org_a"), []byte("later"))
	require.NoError(t, err)

	wr := consumer(t, js, event.StreamValid, event.ConsumerWriter)
	done, err = w.Step(ctx, &p)
	require.NoError(t, err)
	assert.False(t, done)
	require.True(t, p.ValidSet)
	assert.Equal(t, uint64(3), p.Valid)

	var seen []settle.Point
	waited := make(chan error, 1)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	go func() { waited <- w.Wait(wctx, &p, func(q settle.Point) { seen = append(seen, q) }) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned before the writer acknowledged: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	for _, m := range natstest.Fetch(t, wr, 3) {
		require.NoError(t, m.DoubleAck(ctx))
	}
	require.NoError(t, <-waited)
	assert.Empty(t, seen, "the point did not move during Wait (it had moved before)")

	// A wait that cannot finish ends with its context.
	p2, err := w.Mark(ctx)
	require.NoError(t, err)
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	assert.ErrorIs(t, w.Wait(short, &p2, nil), context.DeadlineExceeded)
}
