package logstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/writer/batcher"
)

// startWriter runs the real writer (valid stream into ClickHouse) until the test ends.
func (e *env) startWriter(t *testing.T) {
	t.Helper()
	cfg := batcher.DefaultConfig()
	cfg.MaxRows, cfg.MaxWait, cfg.AckWait = 100, 20*time.Millisecond, 5*time.Second
	w, err := batcher.New(context.Background(), e.js, e.db, cfg, quietLog())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (e *env) consumers(t *testing.T, id string) []string {
	t.Helper()
	s, err := e.js.Stream(context.Background(), event.StreamValid)
	require.NoError(t, err)
	var out []string
	names := s.ConsumerNames(context.Background())
	for n := range names.Name() {
		if logstream.OwnsConsumer(id, n) {
			out = append(out, n)
		}
	}
	require.NoError(t, names.Err())
	return out
}

// A destination down for longer than the hold bound releases its stream: the stream's consumer is
// deleted (the valid stream no longer keeps events for it) and its position kept as a received
// time; once the destination is back, the stream catches up from ClickHouse and goes live on a new
// consumer. Every event arrives (repeats allowed only around the hand-over), in order of first
// arrival, only the stream's organization.
func TestReleasedStreamCatchesUpFromClickHouse(t *testing.T) {
	e := newEnv(t)
	e.startWriter(t)
	secret := logstream.NewSigningSecret()
	rc := webhookReceiver(t, secret)
	org, other := storetest.NewOrg(t), storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org,
		Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: rc.url()},
		Batch:       logstream.Batch{MaxEvents: 20, LingerMS: 10}}, logstream.Secrets{SigningSecret: secret})
	cfg := testConfig()
	cfg.HoldFor = 2 * time.Second
	cfg.ReleaseMinLag = time.Hour
	e.startManager(t, cfg)

	var want []string
	publish := func(n int) {
		recs := newRecords(org, n)
		publishValid(t, e.js, recs)
		publishValid(t, e.js, newRecords(other, n))
		want = append(want, ids(recs)...)
	}
	publish(30)
	rc.waitDistinct(t, 30)
	rc.kill()
	publish(60)
	require.Eventually(t, func() bool {
		st := e.status(t, s.ID)
		return st.Released && st.Mode == logstream.ModeCatchUp
	}, waitFor, tick, "the stream is released")
	// The position is stored before the consumer goes (never the other way round).
	require.Eventually(t, func() bool { return len(e.consumers(t, s.ID)) == 0 }, waitFor, tick,
		"a released stream holds no consumer of the valid stream")
	publish(30)
	rc.restart()
	require.Eventually(t, func() bool {
		st := e.status(t, s.ID)
		return st.Mode == logstream.ModeLive && !st.Released
	}, waitFor, tick, "the stream goes live again")
	assert.Len(t, e.consumers(t, s.ID), 1)
	publish(20)
	rc.waitDistinct(t, len(want))
	assert.Equal(t, want, rc.distinct(), "every event, in order of first arrival")
	reqs, bad := rc.snapshot()
	assert.Empty(t, bad)
	for _, r := range reqs {
		for _, ev := range r.Events {
			require.Equal(t, org, ev.Org)
		}
	}
	assert.True(t, strings.HasPrefix(e.consumers(t, s.ID)[0], "ls_"))
}

// A replay from a time the valid stream still holds delivers again everything received since
// then, on a new consumer, and goes on live.
func TestReplayFromTime(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	rc := webhookReceiver(t, secret)
	org := storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org,
		Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: rc.url()},
		Batch:       logstream.Batch{MaxEvents: 20, LingerMS: 10}}, logstream.Secrets{SigningSecret: secret})
	e.startManager(t, testConfig())
	old := newRecords(org, 20)
	publishValid(t, e.js, old)
	rc.waitDistinct(t, 20)
	time.Sleep(cfgSkew + 100*time.Millisecond) // the replay point is later than the old events by more than the skew
	from := time.Now()
	recent := newRecords(org, 20)
	publishValid(t, e.js, recent)
	rc.waitDistinct(t, 40)
	require.NoError(t, e.st.RequestReplay(context.Background(), s.ID, logstream.Replay{From: from, RequestedAt: time.Now()}))
	require.Eventually(t, func() bool { return e.status(t, s.ID).Generation == 2 }, waitFor, tick)
	later := newRecords(org, 5)
	publishValid(t, e.js, later)
	require.Eventually(t, func() bool {
		reqs, _ := rc.snapshot()
		n := 0
		for _, r := range reqs {
			n += len(r.Events)
		}
		return n >= 65
	}, waitFor, tick)
	reqs, _ := rc.snapshot()
	count := map[string]int{}
	for _, r := range reqs {
		for _, ev := range r.Events {
			count[ev.ID]++
		}
	}
	for _, id := range ids(old) {
		assert.Equal(t, 1, count[id], "an event before the replay point is not sent again")
	}
	for _, id := range ids(recent) {
		assert.Equal(t, 2, count[id], "an event after the replay point is sent again")
	}
	for _, id := range ids(later) {
		assert.Equal(t, 1, count[id])
	}
	_, rev, _ := e.st.PendingReplay(context.Background(), s.ID)
	assert.Zero(t, rev, "the request is settled")
	assert.Len(t, e.consumers(t, s.ID), 1, "the old consumer is gone")

	// Deleting the stream deletes its consumer (the valid stream no longer keeps anything for it)
	// and its status, and delivery stops.
	require.NoError(t, e.st.Delete(context.Background(), s.ID))
	require.Eventually(t, func() bool {
		st, rev, err := e.st.Status(context.Background(), s.ID)
		return err == nil && rev == 0 && st.Consumer == "" && len(e.consumers(t, s.ID)) == 0
	}, waitFor, tick)
	n := len(rc.distinct())
	publishValid(t, e.js, newRecords(org, 5))
	time.Sleep(300 * time.Millisecond)
	assert.Len(t, rc.distinct(), n, "a deleted stream delivers nothing")
}

const cfgSkew = 2 * time.Second
