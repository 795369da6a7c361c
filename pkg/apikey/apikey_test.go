package apikey_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
)

func TestGeneratedKeyIsShownOnceAndStoredAsHash(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	key, err := apikey.Ensure(ctx, js, "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(key, "sk_"))
	again, err := apikey.Ensure(ctx, js, "")
	require.NoError(t, err)
	assert.Empty(t, again, "a second start shows no key")

	// The bucket holds no key in the clear.
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	require.NoError(t, err)
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		require.NoError(t, err)
		assert.NotContains(t, k, key)
		assert.NotContains(t, string(e.Value()), key)
	}

	v, err := apikey.NewVerifier(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer v.Close()
	assert.True(t, v.Valid(key))
	assert.False(t, v.Valid(key+"x"))
	assert.False(t, v.Valid(""))
}

func TestPresetKeyAndRevocationReachEveryVerifier(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	v, err := apikey.NewVerifier(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer v.Close()
	_, err = apikey.Ensure(ctx, js, "short")
	assert.Error(t, err, "a preset key must be long enough")

	const preset = "sk_preset_0123456789abcdef"
	_, err = apikey.Ensure(ctx, js, preset)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return v.Valid(preset) }, 5*time.Second, 10*time.Millisecond,
		"a key added by another process is accepted here")

	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "sha256/"+apikey.Hash(preset)))
	require.Eventually(t, func() bool { return !v.Valid(preset) }, 5*time.Second, 10*time.Millisecond,
		"deleting a key's hash revokes it everywhere")
}
