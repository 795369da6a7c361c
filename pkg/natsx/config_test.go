package natsx_test

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every NATS server configuration Logbook ships keeps JetStream on disk with an fsync after every
// write: the NATS default (every 2 minutes) lost acknowledged writes under Jepsen.
func TestShippedNATSConfigsSyncAlways(t *testing.T) {
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
		})
	}
}
