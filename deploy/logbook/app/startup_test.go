package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
)

func testConfig(dir string, extra map[string]string) Config {
	env := map[string]string{
		"LOGBOOK_DATA_DIR":   dir,
		"LOGBOOK_ADDR":       "127.0.0.1:0",
		"LOGBOOK_API_KEY":    testKey,
		"LOGBOOK_BATCH_WAIT": "50ms",
	}
	for k, v := range extra {
		env[k] = v
	}
	return ConfigFromEnv(config.FromMap(env))
}

func healthy(t *testing.T, a *App) {
	t.Helper()
	res, err := http.Get("http://" + a.Addr + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
}

// A second Logbook on the same data folder fails at once with one line naming the folder, before
// it touches NATS or ClickHouse, and the first keeps serving.
func TestSecondStartOnSameFolderFailsFast(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, testKey)
	t.Cleanup(func() { require.NoError(t, a.Close()) })

	began := time.Now()
	b, err := Start(context.Background(), testConfig(dir, map[string]string{"LOGBOOK_DATA_LOCK_WAIT": "0"}), slog.New(slog.DiscardHandler))
	require.Error(t, err)
	assert.Nil(t, b)
	assert.Less(t, time.Since(began), 2*time.Second, "the second start fails fast")
	assert.ErrorIs(t, err, ErrDataDirInUse)
	abs, _ := filepath.Abs(dir)
	assert.Contains(t, err.Error(), abs)
	assert.Contains(t, err.Error(), "another Logbook")
	assert.Contains(t, err.Error(), "pid ")
	assert.NotContains(t, err.Error(), "\n")
	healthy(t, a)
}

// A Logbook started while the previous one is still closing waits for the folder, then starts.
func TestStartWaitsForTheDataFolder(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, testKey)
	type result struct {
		a   *App
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := Start(context.Background(), testConfig(dir, map[string]string{"LOGBOOK_DATA_LOCK_WAIT": "60s"}), slog.New(slog.DiscardHandler))
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the second start did not wait: %v", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, a.Close())
	r := <-done
	require.NoError(t, r.err)
	healthy(t, r.a)
	require.NoError(t, r.a.Close())
}

// Each start-up step that fails closes what the steps before it opened, without a panic: the lock,
// the NATS server and its listener, the engine (a new start in this process opens it again), the
// workers.
func TestFailedStartUpClosesWhatItOpened(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	tests := []struct {
		name   string
		env    map[string]string
		mutate func(*Config)
		want   string
	}{
		{"data folder is a file", nil, func(c *Config) {
			f := filepath.Join(c.DataDir, "file")
			require.NoError(t, os.WriteFile(f, nil, 0o600))
			c.DataDir = f
		}, "data folder"},
		{"bad stream limit", nil, func(c *Config) { c.Limits.MaxBytes = -1 }, "LOGBOOK_STREAM_MAX_BYTES must be positive"},
		{"missing engine library", map[string]string{"LOGBOOK_CHDB_LIB": "/nonexistent/libchdb.so"}, nil, "make libchdb"},
		{"occupied port", map[string]string{"LOGBOOK_ADDR": busy.Addr().String()}, nil, "failed to listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			natsAddr := freeAddr(t)
			env := map[string]string{"LOGBOOK_NATS_LISTEN": natsAddr}
			for k, v := range tt.env {
				env[k] = v
			}
			cfg := testConfig(dir, env)
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			var a *App
			require.NotPanics(t, func() { a, err = Start(context.Background(), cfg, slog.New(slog.DiscardHandler)) })
			require.Error(t, err)
			require.Nil(t, a)
			assert.Contains(t, err.Error(), tt.want)

			// Nothing is left running: the NATS listener is gone, and a Logbook starts on the same
			// folder and port (in this process, so the engine must have been closed too).
			if c, err := net.DialTimeout("tcp", natsAddr, time.Second); err == nil {
				c.Close()
				t.Fatalf("the embedded NATS server still listens on %s", natsAddr)
			}
			ok := testConfig(dir, map[string]string{"LOGBOOK_NATS_LISTEN": natsAddr, "LOGBOOK_DATA_LOCK_WAIT": "0"})
			b, err := Start(context.Background(), ok, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			healthy(t, b)
			require.NoError(t, b.Close())
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// Close is safe on an App whose start-up failed part way, and twice.
func TestCloseIsSafeTwice(t *testing.T) {
	a := start(t, t.TempDir(), testKey)
	require.NoError(t, a.Close())
	require.NotPanics(t, func() { _ = a.Close() })
	var zero App
	require.NotPanics(t, func() { _ = zero.Close() })
	require.False(t, errors.Is(nil, ErrDataDirInUse))
}
