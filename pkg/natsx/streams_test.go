package natsx_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// The live stream configuration, read back from the server, must keep every durability setting.
func TestLiveStreamsAreDurable(t *testing.T) {
	ns, js := natstest.New(t)
	ctx := context.Background()
	for _, name := range []string{event.StreamRaw, event.StreamValid, event.StreamRejected} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		c := info.Config
		assert.Equal(t, jetstream.LimitsPolicy, c.Retention, name)
		assert.Equal(t, jetstream.FileStorage, c.Storage, name)
		assert.Equal(t, jetstream.DiscardNew, c.Discard, name)
		assert.True(t, c.DenyDelete && c.DenyPurge, name)
		assert.Positive(t, c.MaxBytes, name)
		assert.Greater(t, c.MaxAge, c.Duplicates, name)
		assert.True(t, c.AllowAtomicPublish, name)
		require.NoError(t, natsx.CheckStream(c))
	}
	assert.True(t, ns.JetStreamConfig() != nil)
	assert.True(t, ns.JetStreamEnabled())
}

func TestEmbeddedServerSyncsAlways(t *testing.T) {
	ns, _ := natstest.New(t)
	assert.True(t, ns.JetStreamConfig().SyncAlways, "JetStream must fsync every write")
}

func TestCheckStreamRefusesWeakConfigs(t *testing.T) {
	good := natsx.StreamConfigs(natsx.DefaultStreamLimits())[0]
	tests := []struct {
		name   string
		mutate func(*jetstream.StreamConfig)
	}{
		{"work queue", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }},
		{"memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }},
		{"discard old", func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }},
		{"no cap", func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }},
		{"purge allowed", func(c *jetstream.StreamConfig) { c.DenyPurge = false }},
		{"delete allowed", func(c *jetstream.StreamConfig) { c.DenyDelete = false }},
	}
	require.NoError(t, natsx.CheckStream(good))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			assert.Error(t, natsx.CheckStream(c))
		})
	}
}

// Streams prepared on an existing data directory keep their messages: a restart is not a reset.
func TestPrepareIsIdempotent(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	_, err := js.Publish(ctx, event.RawSubject("org_a"), []byte(`{}`))
	require.NoError(t, err)
	require.NoError(t, natsx.Prepare(ctx, js, natsx.DefaultStreamLimits()))
	s, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs)
}

func TestLimitsValidate(t *testing.T) {
	l := natsx.DefaultStreamLimits()
	require.NoError(t, l.Validate())
	l.MaxAge = l.Duplicates
	assert.Error(t, l.Validate())
	l = natsx.DefaultStreamLimits()
	l.Duplicates = 0
	assert.Error(t, l.Validate())
}

// A byte cap JetStream cannot reserve on disk is refused at start-up with an error that names the
// setting to change.
func TestUnreservableCapIsNamed(t *testing.T) {
	_, js := natstest.New(t)
	l := natsx.DefaultStreamLimits()
	l.MaxBytes = 1 << 50 // a petabyte
	err := natsx.EnsureStreams(context.Background(), js, l)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "LOGBOOK_STREAM_MAX_BYTES")
}
