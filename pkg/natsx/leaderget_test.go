package natsx_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
