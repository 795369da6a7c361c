package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

var quiet = slog.New(slog.DiscardHandler)

const preset = "sk_preset_0123456789abcdef0123456789"

func verifier(t *testing.T, js jetstream.JetStream, cfg ...apikey.VerifierConfig) *apikey.Verifier {
	t.Helper()
	v, err := apikey.NewVerifier(context.Background(), js, quiet, cfg...)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

// replica connects another client to ns, as a second gateway or query API process would.
func replica(t *testing.T, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, js, err := natsx.ConnectInProcess(ns, t.Name()+"-replica")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return js
}

func store(t *testing.T, js jetstream.JetStream) *apikey.Store {
	t.Helper()
	s, err := apikey.Open(context.Background(), js)
	require.NoError(t, err)
	return s
}

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
		assert.NotContains(t, string(e.Value()), key[apikey.PrefixLen:])
	}

	v := verifier(t, js)
	k, ok := v.Lookup(key)
	require.True(t, ok)
	assert.Equal(t, apikey.DefaultName, k.Name)
	assert.Equal(t, apikey.SourceGenerated, k.Source)
	assert.Equal(t, key[:apikey.PrefixLen], k.Prefix)
	assert.False(t, v.Valid(key+"x"))
	assert.False(t, v.Valid(""))
}

// Generated keys carry at least 190 bits: 40 characters, each uniform over 62 symbols.
func TestGeneratedKeysCarryEnoughEntropy(t *testing.T) {
	assert.GreaterOrEqual(t, apikey.GeneratedBits, 190.0)
	seen := map[string]bool{}
	counts := map[rune]int{}
	const n = 2000
	for range n {
		k, err := apikey.Generate()
		require.NoError(t, err)
		require.Len(t, k, 43)
		require.False(t, seen[k])
		seen[k] = true
		for _, r := range k[3:] {
			require.True(t, strings.ContainsRune("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", r))
			counts[r]++
		}
	}
	// Every symbol is used, none far more than its share (80,000 draws, 1,290 expected each).
	require.Len(t, counts, 62)
	for r, c := range counts {
		assert.InDelta(t, n*40/62, c, 250, "symbol %q", r)
	}
}

func TestShortPresetIsRefused(t *testing.T) {
	_, js := natstest.New(t)
	_, err := apikey.Ensure(context.Background(), js, "sk_twenty_characters")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "LOGBOOK_API_KEY")

	env := config.FromMap(map[string]string{"LOGBOOK_API_KEY": "sk_twenty_characters"})
	apikey.PresetFromEnv(env)
	require.Error(t, env.Err())
	assert.Contains(t, env.Err().Error(), "LOGBOOK_API_KEY")
	assert.NotContains(t, env.Err().Error(), "sk_twenty_characters", "the key is never printed")
	env = config.FromMap(map[string]string{"LOGBOOK_API_KEY": preset})
	assert.Equal(t, preset, apikey.PresetFromEnv(env))
	assert.NoError(t, env.Err())
}

// A key created or revoked through one process takes effect in every replica's verifier within a
// second (the bucket watch).
func TestRevocationReachesEveryReplicaWithinASecond(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	one, two := verifier(t, replica(t, ns)), verifier(t, replica(t, ns))
	s := store(t, js)
	secret, err := apikey.Generate()
	require.NoError(t, err)
	_, err = s.Create(ctx, apikey.Spec{Name: "ci"}, secret)
	require.NoError(t, err)
	for _, v := range []*apikey.Verifier{one, two} {
		require.Eventually(t, func() bool { return v.Valid(secret) }, time.Second, time.Millisecond,
			"a key created elsewhere is accepted within a second")
	}

	start := time.Now()
	revoked, err := s.Revoke(ctx, "ci")
	require.NoError(t, err)
	assert.Equal(t, "ci", revoked.Name)
	for _, v := range []*apikey.Verifier{one, two} {
		require.Eventually(t, func() bool { return !v.Valid(secret) }, time.Second, time.Millisecond,
			"a revoked key is refused by every replica within a second")
	}
	t.Logf("revocation reached both verifiers after %v", time.Since(start))
	_, err = s.Revoke(ctx, "ci")
	assert.ErrorIs(t, err, apikey.ErrNotFound)
	_, err = s.Create(ctx, apikey.Spec{Name: "ci"}, secret)
	require.NoError(t, err, "a revoked name can be used again")
	_, err = s.Create(ctx, apikey.Spec{Name: "ci"}, secret+"x")
	assert.ErrorIs(t, err, apikey.ErrExists)
}

// LOGBOOK_API_KEY is the key "env"; changing it revokes the previous one everywhere, and a revoked
// preset cannot come back.
func TestEnvKeyIsReplacedWhenTheVariableChanges(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	v := verifier(t, replica(t, ns))
	_, err := apikey.Ensure(ctx, js, preset)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return v.Valid(preset) }, time.Second, time.Millisecond)
	_, err = apikey.Ensure(ctx, js, preset)
	require.NoError(t, err, "the same key again changes nothing")

	next := preset + "-next"
	_, err = apikey.Ensure(ctx, js, next)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return v.Valid(next) && !v.Valid(preset) }, time.Second, time.Millisecond,
		"the previous env key is revoked when the variable changes")
	listed, err := store(t, js).List(ctx)
	require.NoError(t, err)
	require.Len(t, listed, 1)
	assert.Equal(t, apikey.EnvName, listed[0].Name)
	assert.Equal(t, next[:apikey.PrefixLen], listed[0].Prefix)

	_, err = apikey.Ensure(ctx, js, preset)
	assert.ErrorIs(t, err, apikey.ErrPresetRevoked, "a replaced key cannot come back")
	_, err = store(t, js).Revoke(ctx, apikey.EnvName)
	require.NoError(t, err)
	_, err = apikey.Ensure(ctx, js, next)
	assert.ErrorIs(t, err, apikey.ErrPresetRevoked, "nor can a revoked one")
	gen, err := apikey.Ensure(ctx, js, "")
	require.NoError(t, err)
	assert.Empty(t, gen, "an installation that had a preset never generates a key")
}

// Using a key costs no write per request: its last use is stored once per flush.
func TestLastUseIsStoredOncePerFlush(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	_, err := apikey.Ensure(ctx, js, preset)
	require.NoError(t, err)
	v := verifier(t, replica(t, ns), apikey.VerifierConfig{UsageFlush: time.Hour})
	writes := func() uint64 {
		st, err := js.Stream(ctx, natsx.KVStream(event.BucketAPIKeys))
		require.NoError(t, err)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		return info.State.LastSeq
	}
	listed, err := store(t, js).List(ctx)
	require.NoError(t, err)
	require.True(t, listed[0].LastUsed.IsZero(), "never used yet")

	before := writes()
	for range 1000 {
		require.True(t, v.Valid(preset))
	}
	assert.Equal(t, before, writes(), "a request writes nothing")
	v.Flush(ctx)
	assert.Equal(t, before+1, writes(), "a flush writes once per used key")
	listed, err = store(t, js).List(ctx)
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), listed[0].LastUsed, 2*time.Second)
	v.Flush(ctx)
	assert.Equal(t, before+1, writes(), "nothing new, nothing written")
}

// Keys stored before keys had names (sha256/<hash>) are migrated: the current LOGBOOK_API_KEY
// becomes "env", a previous one is revoked, a generated one is kept under a legacy name.
func TestUnnamedKeysAreMigrated(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	require.NoError(t, err)
	old, generated := "sk_old_preset_0123456789", "sk_generated_0123456789abcdefghijklmnop"
	for k, v := range map[string]string{preset: "preset", old: "preset", generated: "generated"} {
		_, err := kv.Put(ctx, "sha256/"+apikey.Hash(k), []byte(v))
		require.NoError(t, err)
	}
	_, err = apikey.Ensure(ctx, js, preset)
	require.NoError(t, err)
	v := verifier(t, js)
	k, ok := v.Lookup(preset)
	require.True(t, ok)
	assert.Equal(t, apikey.EnvName, k.Name)
	assert.False(t, v.Valid(old), "a previous LOGBOOK_API_KEY is revoked")
	k, ok = v.Lookup(generated)
	require.True(t, ok, "a generated key keeps working")
	assert.Equal(t, "legacy-"+apikey.Hash(generated)[:8], k.Name)
	listed, err := store(t, js).List(ctx)
	require.NoError(t, err)
	assert.Len(t, listed, 2)
	names, err := kv.Keys(ctx)
	require.NoError(t, err)
	for _, n := range names {
		assert.False(t, strings.HasPrefix(n, "sha256/"), "nothing unnamed is left: %s", n)
	}
}

func TestScopesAndOrganizations(t *testing.T) {
	full := &apikey.Key{Name: "full"}
	admin := &apikey.Key{Name: "admin", Scopes: []apikey.Scope{apikey.ScopeAdmin}}
	reader := &apikey.Key{Name: "reader", Scopes: []apikey.Scope{apikey.ScopeEventsRead}}
	orgA := &apikey.Key{Name: "org-a", Organizations: []string{"org_a"}}
	viewer := &apikey.Key{Name: "viewer", Scopes: []apikey.Scope{apikey.ScopeEventsRead}, Organizations: []string{event.SelfAuditOrgID}}
	tests := []struct {
		key   *apikey.Key
		scope apikey.Scope
		org   string
		may   bool
	}{
		{full, apikey.ScopeAdmin, event.SelfAuditOrgID, true},
		{admin, apikey.ScopeEventsWrite, "org_b", true},
		{reader, apikey.ScopeEventsRead, "org_b", true},
		{reader, apikey.ScopeEventsWrite, "org_b", false},
		{reader, apikey.ScopeEventsRead, event.SelfAuditOrgID, false},
		{orgA, apikey.ScopeEventsWrite, "org_a", true},
		{orgA, apikey.ScopeEventsWrite, "org_b", false},
		{orgA, apikey.ScopeAdmin, event.SelfAuditOrgID, false},
		{viewer, apikey.ScopeEventsRead, event.SelfAuditOrgID, true},
		{viewer, apikey.ScopeEventsRead, "org_a", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.may, tt.key.Allows(tt.scope) && tt.key.MayName(tt.org), "%s %s %s", tt.key.Name, tt.scope, tt.org)
	}

	spec, err := apikey.ParseSpec([]byte(`{"name":"r","scopes":["read","events:read"],"organizations":["org_a"]}`))
	require.NoError(t, err)
	scopes, err := spec.Check()
	require.NoError(t, err)
	assert.Equal(t, []apikey.Scope{apikey.ScopeEventsRead, apikey.ScopeRetentionRead, apikey.ScopeSchemasRead}, scopes)
	for _, body := range []string{
		`{"name":"has space"}`, `{"name":"env"}`, `{"name":"x","scopes":["events:delete"]}`,
		`{"name":"x","organizations":["org.*"]}`, `{"name":"x","organizations":["org_logbook"]}`,
		`{"name":"x","scopes":["admin"],"organizations":["org_a"]}`, `{"name":"x","colour":1}`,
		`{"scopes":["read"]}`, `{"name":"x","scopes":"read"}`, `{"name":null}`,
	} {
		_, err := apikey.ParseSpec([]byte(body))
		var fe *apikey.FieldError
		assert.ErrorAs(t, err, &fe, body)
	}
	_, err = apikey.ParseSpec([]byte(`[1]`))
	assert.ErrorIs(t, err, apikey.ErrMalformed)
}

// Start-up changes are announced before they are made; a failed announcement changes nothing.
func TestStartUpChangesAreAnnouncedFirst(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	s := store(t, js)
	var seen []string
	s.BeforeChange(func(_ context.Context, c apikey.Change) error {
		seen = append(seen, fmt.Sprintf("%s revoked=%v %s", c.Key.Name, c.Revoked, c.Reason))
		return nil
	})
	_, err := s.Ensure(ctx, preset)
	require.NoError(t, err)
	_, err = s.Ensure(ctx, preset)
	require.NoError(t, err)
	assert.Equal(t, []string{"env revoked=false LOGBOOK_API_KEY set"}, seen, "an unchanged key changes nothing")

	s.BeforeChange(func(context.Context, apikey.Change) error { return errors.New("raw stream full") })
	_, err = s.Ensure(ctx, preset+"-next")
	require.ErrorContains(t, err, "raw stream full")
	k, err := s.Get(ctx, apikey.EnvName)
	require.NoError(t, err)
	assert.Equal(t, apikey.Hash(preset), k.Hash, "not recorded, not replaced")
}
