package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
)

// With LOGBOOK_NATS_LISTEN and credentials, the embedded NATS server refuses clients without them
// (whoever reaches NATS could read the signing secrets, add API keys and publish straight into
// the validated stream), and the single process itself, which authenticates too, works as before.
func TestEmbeddedNATSListenerRequiresCredentials(t *testing.T) {
	env := config.FromMap(map[string]string{
		"LOGBOOK_DATA_DIR": t.TempDir(), "LOGBOOK_ADDR": "127.0.0.1:0", "LOGBOOK_API_KEY": testKey,
		"LOGBOOK_BATCH_WAIT": "50ms", "LOGBOOK_NATS_LISTEN": "127.0.0.1:0",
		"LOGBOOK_NATS_USER": "logbook", "LOGBOOK_NATS_PASSWORD": "s3cret0123456789",
	})
	cfg := ConfigFromEnv(env)
	require.NoError(t, env.Err())
	a, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	url := a.ns.ClientURL()

	_, err = nats.Connect(url, nats.Timeout(5*time.Second))
	assert.ErrorIs(t, err, nats.ErrAuthorization, "a client without credentials")
	_, err = nats.Connect(url, nats.UserInfo("logbook", "guess"), nats.Timeout(5*time.Second))
	assert.ErrorIs(t, err, nats.ErrAuthorization, "a client with a wrong password")
	nc, err := nats.Connect(url, nats.UserInfo("logbook", "s3cret0123456789"))
	require.NoError(t, err, "the operator's client")
	nc.Close()

	c := a.client(t, testKey)
	c.emit("org_nats_auth", time.Now().Add(-time.Minute), 1)
	c.waitFor("org_nats_auth", 1)
}

// The embedded NATS listener stays on loopback unless credentials protect it: an address off
// loopback without LOGBOOK_NATS_USER/PASSWORD stops the process at start-up, naming the variable.
func TestEmbeddedNATSListenerOffLoopbackNeedsCredentials(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want string // "" for no error
	}{
		{"loopback", map[string]string{"LOGBOOK_NATS_LISTEN": "127.0.0.1:4222"}, ""},
		{"no host is loopback", map[string]string{"LOGBOOK_NATS_LISTEN": ":4222"}, ""},
		{"every interface", map[string]string{"LOGBOOK_NATS_LISTEN": "0.0.0.0:4222"}, "LOGBOOK_NATS_LISTEN"},
		{"a LAN address", map[string]string{"LOGBOOK_NATS_LISTEN": "10.1.2.3:4222"}, "LOGBOOK_NATS_LISTEN"},
		{"every interface, with credentials", map[string]string{"LOGBOOK_NATS_LISTEN": "0.0.0.0:4222",
			"LOGBOOK_NATS_USER": "logbook", "LOGBOOK_NATS_PASSWORD": "s3cret0123456789"}, ""},
		{"listen and an external server", map[string]string{"LOGBOOK_NATS_LISTEN": "127.0.0.1:4222",
			"LOGBOOK_NATS_URL": "nats://nats:4222"}, "LOGBOOK_NATS_LISTEN"},
		{"a credentials file for the embedded server", map[string]string{"LOGBOOK_NATS_CREDS": "/dev/null"}, "LOGBOOK_NATS_URL"},
		{"unknown role", map[string]string{"LOGBOOK_ROLES": "writer,storage"}, "LOGBOOK_ROLES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := config.FromMap(tt.vars)
			ConfigFromEnv(env)
			if tt.want == "" {
				assert.NoError(t, env.Err())
				return
			}
			require.Error(t, env.Err())
			assert.Contains(t, env.Err().Error(), tt.want)
		})
	}
}

// LOGBOOK_ROLES names the parts a process runs; all of them by default.
func TestRolesFromEnv(t *testing.T) {
	tests := []struct {
		value string
		want  Roles
	}{
		{"", AllRoles},
		{"all", AllRoles},
		{"writer,query", Roles{Writer: true, Query: true}},
		{" ingest , validator ", Roles{Ingest: true, Validator: true}},
	}
	for _, tt := range tests {
		env := config.FromMap(map[string]string{"LOGBOOK_ROLES": tt.value})
		assert.Equal(t, tt.want, RolesFromEnv(env), tt.value)
		assert.NoError(t, env.Err())
	}
	assert.Equal(t, "writer,query", Roles{Writer: true, Query: true}.String())
}
