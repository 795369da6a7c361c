package natsx_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func TestWatchBucketMirrorsPutsAndDeletes(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "mirror_test", Storage: jetstream.FileStorage})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "a", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Put(ctx, "b", []byte("2"))
	require.NoError(t, err)

	var mu sync.Mutex
	seen := map[string]string{}
	m, err := natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		mu.Lock()
		defer mu.Unlock()
		if e.Operation() == jetstream.KeyValuePut {
			seen[e.Key()] = string(e.Value())
		} else {
			delete(seen, e.Key())
		}
	})
	require.NoError(t, err)
	mu.Lock()
	assert.Equal(t, map[string]string{"a": "1", "b": "2"}, seen, "everything present is applied before WatchBucket returns")
	mu.Unlock()

	_, err = kv.Put(ctx, "c", []byte("3"))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "a"))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["c"] == "3" && seen["a"] == ""
	}, 5*time.Second, 10*time.Millisecond)
	m.Stop()

	_, err = kv.Put(ctx, "d", []byte("4"))
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	assert.NotContains(t, seen, "d", "nothing is applied after Stop")
	mu.Unlock()
}
