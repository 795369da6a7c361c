package natsx_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// shortLimits keeps settled messages 2 s, with a 1 s duplicate window.
func shortLimits() natsx.StreamLimits {
	l := natsx.DefaultStreamLimits()
	l.Keep, l.IdempotencyWindow, l.Duplicates = 2*time.Second, 2*time.Second, time.Second
	return l
}

func durable(t *testing.T, js jetstream.JetStream, stream, name string) jetstream.Consumer {
	t.Helper()
	c, err := js.CreateOrUpdateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
	})
	require.NoError(t, err)
	return c
}

// take fetches n messages and acknowledges the first ack of them (waiting for the server's
// confirmation); it returns the others, delivered and unacknowledged.
func take(t *testing.T, c jetstream.Consumer, n, ack int) (held []jetstream.Msg) {
	t.Helper()
	b, err := c.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	i := 0
	for m := range b.Messages() {
		if i < ack {
			require.NoError(t, m.DoubleAck(context.Background()))
		} else {
			held = append(held, m)
		}
		i++
	}
	require.Equal(t, n, i)
	return held
}

func publishN(t *testing.T, js jetstream.JetStream, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		_, err := js.Publish(context.Background(), event.RawSubject("org_a"), []byte(fmt.Sprintf("%s-%d", prefix, i)))
		require.NoError(t, err)
	}
}

func rawState(t *testing.T, js jetstream.JetStream) (first, last, msgs uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.FirstSeq, info.State.LastSeq, info.State.Msgs
}

// The trimmer removes what is settled and old, keeps what any durable consumer has not settled
// however old it is (a lagging second consumer holds the prefix), keeps what is settled but young,
// and ignores readers (ordered consumers).
func TestTrimmerRemovesOnlySettledAndOld(t *testing.T) {
	_, js := natstest.NewWithLimits(t, shortLimits())
	ctx := context.Background()
	ahead, behind := durable(t, js, event.StreamRaw, "ahead"), durable(t, js, event.StreamRaw, "behind")
	_, err := js.OrderedConsumer(ctx, event.StreamRaw, jetstream.OrderedConsumerConfig{}) // a reader, never settles
	require.NoError(t, err)
	trimmer := natsx.NewTrimmer(js, slog.New(slog.DiscardHandler), event.StreamRaw, event.StreamValid)

	publishN(t, js, "old", 10)     // seq 1-10
	take(t, ahead, 10, 10)         // settled by one consumer
	held := take(t, behind, 5, 3)  // the other settled 1-3, holds 4-5, has not seen 6-10
	keep, err := trimmer.Trim(ctx) // everything is younger than the keep time
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, keep)
	first, last, _ := rawState(t, js)
	assert.Equal(t, uint64(1), first, "nothing younger than the keep time is removed")

	time.Sleep(2500 * time.Millisecond) // now older than the keep time (and than any max age of 2 s)
	_, err = trimmer.Trim(ctx)
	require.NoError(t, err)
	first, last, msgs := rawState(t, js)
	assert.Equal(t, uint64(4), first, "settled by both and old: removed; held by the lagging consumer: kept")
	assert.Equal(t, uint64(10), last)
	assert.Equal(t, uint64(7), msgs, "the unsettled events are all there, however old")

	p, err := natsx.ReadProgress(ctx, js, event.StreamRaw)
	require.NoError(t, err)
	require.Len(t, p.Consumers, 2, "ordered consumers are not counted")
	settled, ok := p.Settled()
	assert.True(t, ok)
	assert.Equal(t, uint64(3), settled)
	assert.WithinRange(t, p.Oldest(), time.Now().Add(-10*time.Second), time.Now().Add(-2*time.Second),
		"the oldest unsettled event is the 4th, stored over 2 s ago")

	take(t, behind, 5, 5)       // the lagging consumer settles 6-10 but still holds 4-5
	publishN(t, js, "young", 2) // seq 11-12
	take(t, ahead, 2, 2)        // settled by one, young
	_, err = trimmer.Trim(ctx)
	require.NoError(t, err)
	first, _, _ = rawState(t, js)
	assert.Equal(t, uint64(4), first, "4 and 5 are still held")

	// Everything settled: the old prefix goes, the young messages stay until they are old too.
	take(t, behind, 2, 2)
	for _, m := range held {
		require.NoError(t, m.DoubleAck(ctx))
	}
	_, err = trimmer.Trim(ctx)
	require.NoError(t, err)
	first, last, _ = rawState(t, js)
	assert.Equal(t, uint64(11), first, "settled and old: gone; settled and young: kept")
	time.Sleep(2500 * time.Millisecond)
	_, err = trimmer.Trim(ctx)
	require.NoError(t, err)
	first, last, msgs = rawState(t, js)
	assert.Equal(t, uint64(13), first)
	assert.Equal(t, uint64(12), last)
	assert.Zero(t, msgs)

	// The valid stream has no durable consumer: nothing is known settled, nothing is removed.
	_, err = js.Publish(ctx, event.ValidSubject("org_a"), []byte("v"))
	require.NoError(t, err)
	time.Sleep(2500 * time.Millisecond)
	_, err = trimmer.Trim(ctx)
	require.NoError(t, err)
	s, err := js.Stream(ctx, event.StreamValid)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs)
}

// A filtered consumer holds the stream only by the messages of its own subjects: with nothing of
// its own pending it has settled the whole stream.
func TestProgressOfFilteredConsumers(t *testing.T) {
	_, js := natstest.NewWithLimits(t, shortLimits())
	ctx := context.Background()
	pub := func(org string) time.Time {
		ack, err := js.Publish(ctx, event.RawSubject(org), []byte(org))
		require.NoError(t, err)
		s, err := js.Stream(ctx, event.StreamRaw)
		require.NoError(t, err)
		m, err := s.GetMsg(ctx, ack.Sequence)
		require.NoError(t, err)
		return m.Time
	}
	filtered := func(name, org string) jetstream.Consumer {
		c, err := js.CreateOrUpdateConsumer(ctx, event.StreamRaw, jetstream.ConsumerConfig{
			Durable: name, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: event.RawSubject(org),
		})
		require.NoError(t, err)
		return c
	}
	onlyB, _ := filtered("only_b", "org_b"), filtered("only_c", "org_c")
	pub("org_a")
	pub("org_a")
	bTime := pub("org_b") // seq 3
	pub("org_a")
	progress := func() map[string]natsx.ConsumerProgress {
		p, err := natsx.ReadProgress(ctx, js, event.StreamRaw)
		require.NoError(t, err)
		out := map[string]natsx.ConsumerProgress{}
		for _, c := range p.Consumers {
			out[c.Name] = c
		}
		return out
	}
	got := progress()
	assert.Equal(t, uint64(4), got["only_c"].Settled, "nothing of its own: settled through the last sequence")
	assert.True(t, got["only_c"].Oldest.IsZero())
	assert.Equal(t, uint64(0), got["only_b"].Settled, "its own message 3 is pending")
	assert.True(t, got["only_b"].Oldest.Equal(bTime), "its oldest unsettled message is 3, not 1")
	take(t, onlyB, 1, 1)
	got = progress()
	assert.Equal(t, uint64(4), got["only_b"].Settled)
	assert.True(t, got["only_b"].Oldest.IsZero())
}
