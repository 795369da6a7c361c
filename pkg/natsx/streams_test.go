package natsx_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
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
		assert.True(t, c.DenyDelete, name)
		assert.Equal(t, name == event.StreamRejected, c.DenyPurge, "only the trimmed streams allow purges: %s", name)
		assert.Positive(t, c.MaxBytes, name)
		assert.Zero(t, c.MaxAge, "%s: nothing may expire unsettled", name)
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
	cfgs := natsx.StreamConfigs(natsx.DefaultStreamLimits())
	raw, rejected := cfgs[0], cfgs[2]
	tests := []struct {
		name   string
		good   jetstream.StreamConfig
		mutate func(*jetstream.StreamConfig)
	}{
		{"work queue", raw, func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }},
		{"interest", raw, func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }},
		{"memory", raw, func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }},
		{"discard old", raw, func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardOld }},
		{"no cap", raw, func(c *jetstream.StreamConfig) { c.MaxBytes = -1 }},
		{"max age on raw", raw, func(c *jetstream.StreamConfig) { c.MaxAge = 24 * time.Hour }},
		{"max age on rejected", rejected, func(c *jetstream.StreamConfig) { c.MaxAge = 24 * time.Hour }},
		{"per-subject limit", raw, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }},
		{"message TTLs", raw, func(c *jetstream.StreamConfig) { c.AllowMsgTTL = true }},
		{"no dedup", raw, func(c *jetstream.StreamConfig) { c.Duplicates = 0 }},
		{"purge allowed on rejected", rejected, func(c *jetstream.StreamConfig) { c.DenyPurge = false }},
		{"delete allowed", raw, func(c *jetstream.StreamConfig) { c.DenyDelete = false }},
		{"no keep time", raw, func(c *jetstream.StreamConfig) { c.Metadata = nil }},
		{"keep within the dedup window", raw, func(c *jetstream.StreamConfig) {
			c.Metadata = map[string]string{natsx.KeepMetadata: "1m"}
		}},
	}
	for _, c := range cfgs {
		require.NoError(t, natsx.CheckStream(c), c.Name)
	}
	legacy := raw
	legacy.DenyPurge = true
	require.NoError(t, natsx.CheckStream(legacy), "a raw stream denying purges loses nothing")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.good
			c.Metadata = maps.Clone(c.Metadata)
			tt.mutate(&c)
			assert.Error(t, natsx.CheckStream(c))
		})
	}
}

// Streams created by an older Logbook (a 24 h max age, purges denied) are updated at start-up:
// the max age goes, so nothing unsettled expires any more, and the keep time is set. JetStream
// cannot lift deny-purge, so those keep denying purges (and are not trimmed).
func TestOldStreamsAreUpdated(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, js, err := natsx.ConnectInProcess(ns, "old")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	for _, c := range natsx.StreamConfigs(natsx.DefaultStreamLimits()) {
		c.MaxAge, c.DenyPurge, c.Metadata = 24*time.Hour, true, nil // as the previous version made them
		_, err := js.CreateStream(ctx, c)
		require.NoError(t, err)
	}
	_, err = js.Publish(ctx, event.RawSubject("org_a"), []byte(`{}`))
	require.NoError(t, err)
	require.NoError(t, natsx.Prepare(ctx, js, natsx.DefaultStreamLimits()))
	for _, name := range []string{event.StreamRaw, event.StreamValid, event.StreamRejected} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		assert.Zero(t, info.Config.MaxAge, name)
		assert.True(t, info.Config.DenyPurge, name)
		require.NoError(t, natsx.CheckStream(info.Config), name)
		if name != event.StreamRejected {
			assert.Equal(t, "24h0m0s", info.Config.Metadata[natsx.KeepMetadata], name)
		}
		if name == event.StreamRaw {
			assert.Equal(t, uint64(1), info.State.Msgs, "the update keeps the messages")
		}
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
	require.NoError(t, natsx.DefaultStreamLimits().Validate())
	for name, mutate := range map[string]func(*natsx.StreamLimits){
		"keep within dedup window":      func(l *natsx.StreamLimits) { l.Keep = l.Duplicates },
		"no dedup":                      func(l *natsx.StreamLimits) { l.Duplicates = 0 },
		"keep under idempotency window": func(l *natsx.StreamLimits) { l.Keep = time.Hour },
		"no idempotency window":         func(l *natsx.StreamLimits) { l.IdempotencyWindow = 0 },
		"no cap":                        func(l *natsx.StreamLimits) { l.MaxBytes = 0 },
		"too many replicas":             func(l *natsx.StreamLimits) { l.Replicas = 7 },
	} {
		l := natsx.DefaultStreamLimits()
		mutate(&l)
		assert.Error(t, l.Validate(), name)
	}
	l := natsx.DefaultStreamLimits()
	l.Keep, l.IdempotencyWindow, l.Duplicates = 2*time.Second, 2*time.Second, time.Second
	assert.NoError(t, l.Validate(), "short windows for tests")
}

// LOGBOOK_STREAM_KEEP sets the keep time; LOGBOOK_STREAM_MAX_AGE, its old name, still does when
// it is unset.
func TestLimitsFromEnv(t *testing.T) {
	env := config.FromMap(map[string]string{"LOGBOOK_STREAM_KEEP": "48h", "LOGBOOK_IDEMPOTENCY_WINDOW": "1h"})
	l := natsx.LimitsFromEnv(env)
	require.NoError(t, env.Err())
	assert.Equal(t, 48*time.Hour, l.Keep)
	assert.Equal(t, time.Hour, l.IdempotencyWindow)
	l = natsx.LimitsFromEnv(config.FromMap(map[string]string{"LOGBOOK_STREAM_MAX_AGE": "36h"}))
	assert.Equal(t, 36*time.Hour, l.Keep)
	assert.Equal(t, natsx.IdempotencyTTL, l.IdempotencyWindow)
	l = natsx.LimitsFromEnv(config.FromMap(map[string]string{"LOGBOOK_STREAM_MAX_AGE": "36h", "LOGBOOK_STREAM_KEEP": "30h"}))
	assert.Equal(t, 30*time.Hour, l.Keep)
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

// The raw stream's dedup window only covers the gateway's re-send of an unconfirmed publish, so it
// is at most RawDuplicates; the outputs keep the full window the validator's republish relies on.
func TestRawStreamHasTheShortDedupWindow(t *testing.T) {
	windows := func(l natsx.StreamLimits) map[string]time.Duration {
		out := map[string]time.Duration{}
		for _, c := range natsx.StreamConfigs(l) {
			out[c.Name] = c.Duplicates
		}
		return out
	}
	assert.Equal(t, map[string]time.Duration{
		event.StreamRaw: natsx.RawDuplicates, event.StreamValid: 10 * time.Minute, event.StreamRejected: 10 * time.Minute,
	}, windows(natsx.DefaultStreamLimits()))
	assert.Equal(t, 2*time.Minute, natsx.RawDuplicates)
	l := natsx.DefaultStreamLimits()
	l.Duplicates = time.Second // tests shorten every window
	assert.Equal(t, map[string]time.Duration{
		event.StreamRaw: time.Second, event.StreamValid: time.Second, event.StreamRejected: time.Second,
	}, windows(l))
}
