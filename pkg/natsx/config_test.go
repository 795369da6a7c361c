package natsx_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every NATS server configuration Logbook ships keeps JetStream on disk with an fsync after every
// write: the NATS default (every 2 minutes) lost acknowledged writes under Jepsen.
func TestShippedNATSConfigsSyncAlways(t *testing.T) {
	// The configurations take their credentials from the environment (see docker-compose.yml).
	for _, v := range []string{"LOGBOOK_NATS_USER", "LOGBOOK_NATS_PASSWORD", "NATS_ROUTE_PASSWORD"} {
		t.Setenv(v, "x0")
	}
	t.Setenv("NATS_STORE_DIR", "/var/lib/nats")
	for i := 1; i <= 3; i++ {
		t.Setenv(fmt.Sprintf("NATS_ROUTE_%d", i), fmt.Sprintf("nats://logbook-route:x0@nats-%d:6222", i))
	}
	files, err := filepath.Glob("../../deploy/nats/*.conf")
	require.NoError(t, err)
	require.NotEmpty(t, files, "no NATS configuration found under deploy/nats")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			opts, err := server.ProcessConfigFile(f)
			require.NoError(t, err)
			assert.True(t, opts.JetStream, "JetStream enabled")
			assert.True(t, opts.SyncAlways, "jetstream { sync_interval: always }")
			assert.NotEmpty(t, opts.StoreDir, "JetStream stores on disk")
			assert.NotEmpty(t, opts.Username, "clients authenticate")
		})
	}
}
