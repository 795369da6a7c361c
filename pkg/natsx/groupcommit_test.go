package natsx_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func rawMsg(org, id string, size int) *nats.Msg {
	m := nats.NewMsg(event.RawSubject(org))
	m.Data = make([]byte, size)
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	return m
}

func groupCommit(t *testing.T, l natsx.StreamLimits) (*natsx.GroupCommit, jetstream.JetStream) {
	ns, js := natstest.NewWithLimits(t, l)
	nc, _, err := natsx.ConnectInProcess(ns, "gc")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(g.Close)
	return g, js
}

// storedIDs reads every message of the raw stream: its message id and its batch id.
func storedIDs(t *testing.T, js jetstream.JetStream) (ids []string, batches map[string]int) {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, event.StreamRaw, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	s, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	batches = map[string]int{}
	for len(ids) < int(info.State.Msgs) {
		b, err := c.Fetch(int(info.State.Msgs) - len(ids))
		require.NoError(t, err)
		for m := range b.Messages() {
			ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
			batches[m.Headers().Get("Nats-Batch-Id")]++
		}
	}
	return ids, batches
}

func TestGroupCommitBatchesConcurrentPublishes(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	const workers, each = 50, 40
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				assert.NoError(t, g.Publish(context.Background(), rawMsg("org_a", fmt.Sprintf("w%d-%d", w, i), 200)))
			}
		}(w)
	}
	wg.Wait()
	ids, batches := storedIDs(t, js)
	require.Len(t, ids, workers*each, "every acknowledged message is stored once")
	seen := map[string]bool{}
	for _, id := range ids {
		require.False(t, seen[id], "stored twice: %s", id)
		seen[id] = true
	}
	t.Logf("%d messages in %d batches", len(ids), len(batches))
	assert.Less(t, len(batches), workers*each/2, "concurrent publishes must share batches (group commit)")
}

func TestGroupCommitDuplicateIDsAreAcknowledgedOnce(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, rawMsg("org_a", "already-there", 10)))
	// One batch mixing an id the stream has seen, an id repeated inside the batch, and new ids.
	msgs := []*nats.Msg{
		rawMsg("org_a", "new-1", 10), rawMsg("org_b", "already-there", 10), rawMsg("org_a", "twin", 10),
		rawMsg("org_a", "twin", 10), rawMsg("org_b", "new-2", 10),
	}
	for i, err := range g.PublishAll(ctx, msgs) {
		assert.NoError(t, err, "message %d", i)
	}
	ids, _ := storedIDs(t, js)
	assert.ElementsMatch(t, []string{"already-there", "new-1", "twin", "new-2"}, ids)
}

func TestGroupCommitReportsAFullStream(t *testing.T) {
	l := natsx.DefaultStreamLimits()
	l.MaxBytes = 1 << 20
	g, js := groupCommit(t, l)
	ctx := context.Background()
	var failed int
	for i := 0; i < 30; i++ {
		msgs := []*nats.Msg{rawMsg("org_a", fmt.Sprintf("a%d", i), 40<<10), rawMsg("org_a", fmt.Sprintf("b%d", i), 40<<10)}
		for _, err := range g.PublishAll(ctx, msgs) {
			if err != nil {
				failed++
			}
		}
	}
	require.Positive(t, failed, "a full stream must refuse, not drop")
	ids, _ := storedIDs(t, js)
	assert.Equal(t, 60-failed, len(ids), "exactly the acknowledged messages are stored")
}

// A key-value bucket's stream takes group-committed writes: a put, a create (expected last
// subject sequence 0) that holds, and one that fails without failing its batch-mates.
func TestGroupCommitOnAKeyValueBucket(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	const bucket = "test_group_commit"
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	s, err := js.Stream(ctx, natsx.KVStream(bucket))
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = true // a bucket's stream is created without it
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "taken", []byte("first"))
	require.NoError(t, err)
	g := natsx.NewGroupCommit(js.Conn(), js, natsx.KVStream(bucket), natsx.DefaultGroupConfig())
	t.Cleanup(g.Close)
	msg := func(key, val string, create bool) *nats.Msg {
		m := nats.NewMsg(natsx.KVSubject(bucket, key))
		m.Data = []byte(val)
		if create {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		}
		return m
	}
	errs := g.PublishAll(ctx, []*nats.Msg{msg("a", "1", false), msg("b", "2", true), msg("taken", "second", true), msg("c", "3", true)})
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.Error(t, errs[2], "a create on an existing key fails")
	assert.NoError(t, errs[3])
	for key, want := range map[string]string{"a": "1", "b": "2", "taken": "first", "c": "3"} {
		e, err := kv.Get(ctx, key)
		require.NoError(t, err, key)
		assert.Equal(t, want, string(e.Value()), key)
	}
	// Many concurrent puts share batches.
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			assert.NoError(t, g.Publish(ctx, msg(fmt.Sprintf("k%d", i), "v", true)))
		}(i)
	}
	wg.Wait()
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	n := 0
	for range keys.Keys() {
		n++
	}
	assert.Equal(t, 204, n)
}
