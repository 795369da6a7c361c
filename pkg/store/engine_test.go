package store_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/store"
)

// The engine's memory settings become its start arguments; zero leaves the engine's default.
func TestEngineMemoryArgs(t *testing.T) {
	assert.Equal(t, []string{
		"--index_mark_cache_size=134217728", "--mark_cache_size=134217728",
		"--max_server_memory_usage=1073741824", "--primary_index_cache_size=134217728",
	}, store.DefaultEngineMemory().Args())

	t.Setenv("LOGBOOK_ENGINE_MAX_MEMORY", "0")
	t.Setenv("LOGBOOK_ENGINE_CACHE_BYTES", "1048576")
	env := config.FromEnv()
	m := store.EngineMemoryFromEnv(env)
	require.NoError(t, env.Err())
	assert.Equal(t, []string{
		"--index_mark_cache_size=1048576", "--mark_cache_size=1048576", "--primary_index_cache_size=1048576",
	}, m.Args())

	t.Setenv("LOGBOOK_ENGINE_MAX_MEMORY", "-1")
	env = config.FromEnv()
	store.EngineMemoryFromEnv(env)
	assert.Error(t, env.Err())
}
