package app

import (
	"bytes"
	"context"
	"github.com/logbookhq/logbook/pkg/natsx"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/queryapi/apikeys"
)

// keysCommand runs `logbook keys args…` as deploy/logbook's main does, and returns its output.
func keysCommand(t *testing.T, dataDir, natsURL string, args ...string) (string, error) {
	t.Helper()
	ctx := context.Background()
	adm, err := OpenAdmin(ctx, dataDir, natsURL, natsx.Auth{})
	if err != nil {
		return "", err
	}
	defer adm.Close()
	s, err := apikey.Open(ctx, adm.JS)
	require.NoError(t, err)
	var out bytes.Buffer
	err = apikeys.Command(selfaudit.Operator(ctx, "alice", "ops-host"), apikeys.New(s, selfaudit.New(adm.JS, quietLog)), args, &out)
	return out.String(), err
}

var quietLog = slog.New(slog.DiscardHandler)

var keyInOutput = regexp.MustCompile(`\n    (sk_[0-9A-Za-z]{40})\n`)

// The keys command works on a stopped Logbook's data directory, refuses a running one's (the data
// directory is locked), and reaches a running one through its NATS listener; its changes are on
// record with the operator as actor.
func TestKeysCommand(t *testing.T) {
	_, err := keysCommand(t, t.TempDir(), "", "list")
	require.ErrorContains(t, err, "start Logbook on it once first", "a command never creates Logbook's streams")
	dir := t.TempDir()
	a := start(t, dir, testKey)
	_, err = keysCommand(t, dir, "", "list")
	require.ErrorIs(t, err, ErrDataDirInUse, "a running Logbook's data directory is not opened twice")
	require.NoError(t, a.Close())

	out, err := keysCommand(t, dir, "", "create", "--name", "ci", "--scope", "events:write", "--org", "org_a,org_b")
	require.NoError(t, err)
	m := keyInOutput.FindStringSubmatch(out)
	require.NotNil(t, m, "the key is printed once: %s", out)
	ci := m[1]
	out, err = keysCommand(t, dir, "", "list")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^ci\s+`+ci[:apikey.PrefixLen]+`…\s+events:write\s+org_a,org_b\s+created\s`, out)
	assert.Regexp(t, `(?m)^env\s+sk_test…\s+all\s+all\s+env\s`, out)
	assert.NotContains(t, out, ci, "a listing never shows a key")
	_, err = keysCommand(t, dir, "", "create", "--name", "bad name")
	assert.ErrorIs(t, err, apikeys.ErrUsage)
	_, err = keysCommand(t, dir, "", "frobnicate")
	assert.ErrorIs(t, err, apikeys.ErrUsage)

	// A running Logbook with a NATS listener: the command reaches it, a revocation is immediate.
	cfg := ConfigFromEnv(config.FromMap(map[string]string{"LOGBOOK_DATA_DIR": dir, "LOGBOOK_ADDR": "127.0.0.1:0",
		"LOGBOOK_API_KEY": testKey, "LOGBOOK_BATCH_WAIT": "50ms", "LOGBOOK_NATS_LISTEN": "127.0.0.1:0"}))
	b, err := Start(context.Background(), cfg, quietLog)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	writer := b.client(t, ci)
	require.Equal(t, 200, writer.do("POST", "/audit_logs/events", eventBody("org_a", "user.signed_in", time.Now(), nil)).status)
	require.Equal(t, 403, writer.do("POST", "/audit_logs/events", eventBody("org_c", "user.signed_in", time.Now(), nil)).status)
	out, err = keysCommand(t, dir, b.ns.ClientURL(), "revoke", "ci")
	require.NoError(t, err)
	assert.Contains(t, out, `Revoked API key "ci"`)
	require.Eventually(t, func() bool {
		return writer.do("POST", "/audit_logs/events", eventBody("org_a", "user.signed_in", time.Now(), nil)).status == 401
	}, time.Second, 10*time.Millisecond)

	// Both changes are on record, by the operator, from the host.
	admin := b.client(t, testKey)
	var data []any
	require.Eventually(t, func() bool {
		r := admin.list("organization_id=org_logbook&actor_ids=alice&limit=10")
		data, _ = r.body["data"].([]any)
		return len(data) == 2
	}, 20*time.Second, 50*time.Millisecond)
	revoked := data[0].(map[string]any)
	assert.Equal(t, "logbook.api_key.revoked", revoked["action"])
	assert.Equal(t, map[string]any{"id": "alice", "type": "operator", "name": "alice"}, revoked["actor"])
	assert.Equal(t, "ops-host", revoked["context"].(map[string]any)["location"])
	assert.Equal(t, "logbook.api_key.created", data[1].(map[string]any)["action"])
}
