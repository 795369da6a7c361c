package natsx_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func TestLeaderGetReadsKeysAndSequences(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leaderget", History: 2})
	require.NoError(t, err)
	rev, err := kv.Put(ctx, "a", []byte("one"))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "a", []byte("two"))
	require.NoError(t, err)

	m, err := natsx.GetLast(ctx, js, natsx.KVStream("leaderget"), natsx.KVSubject("leaderget", "a"))
	require.NoError(t, err)
	assert.Equal(t, "two", string(m.Data))
	assert.Equal(t, rev+1, m.Sequence)

	m, err = natsx.GetSeq(ctx, js, natsx.KVStream("leaderget"), rev)
	require.NoError(t, err)
	assert.Equal(t, "one", string(m.Data))

	_, err = natsx.GetLast(ctx, js, natsx.KVStream("leaderget"), natsx.KVSubject("leaderget", "none"))
	assert.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	require.NoError(t, kv.Delete(ctx, "a"))
	_, err = natsx.GetLast(ctx, js, natsx.KVStream("leaderget"), natsx.KVSubject("leaderget", "a"))
	assert.ErrorIs(t, err, jetstream.ErrMsgNotFound, "a deleted key reads as missing")
	_, err = natsx.GetSeq(ctx, js, natsx.KVStream("leaderget"), 999)
	assert.ErrorIs(t, err, jetstream.ErrMsgNotFound)
}

// TestCreateOrGetAgreesAcrossACluster: a process that creates a shared value (a signing key) and
// every process that finds it created read the same value at once, whichever node they are on.
// A direct get, which a follower answers from its own replica, can miss a key created a moment
// before; the start of the query API failed on that ("failed to read export signing key: nats:
// key not found").
func TestCreateOrGetAgreesAcrossACluster(t *testing.T) {
	c := natstest.NewCluster(t)
	ctx := context.Background()
	for i := range 300 {
		key := fmt.Sprintf("secret-%d", i)
		want := fmt.Sprintf("first-%d", i)
		got, err := natsx.CreateOrGet(ctx, c.JS[i%3], event.BucketSecrets, key, []byte(want))
		require.NoError(t, err)
		require.Equal(t, want, string(got), "the creator reads its own value")
		for n, js := range c.JS {
			got, err := natsx.CreateOrGet(ctx, js, event.BucketSecrets, key, []byte("later"))
			require.NoError(t, err, "key %s through node %d", key, n)
			require.Equal(t, want, string(got), "key %s through node %d", key, n)
		}
	}
}
