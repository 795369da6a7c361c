package faults

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runToExit runs the binary on dataDir with extra environment and returns its exit code and
// output; it fails the test if the binary is still running after limit.
func runToExit(t *testing.T, dataDir string, limit time.Duration, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary)
	cmd.Env = append(os.Environ(), append([]string{
		"LOGBOOK_DATA_DIR=" + dataDir, "LOGBOOK_ADDR=" + freeAddr(t), "LOGBOOK_API_KEY=" + apiKey,
	}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "logbook still running after %s:\n%s", limit, out.String())
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, out.String()
}

// A second `make run` on the data folder of a running one (a separate process, as in real life:
// the engine allows one instance per process) exits at once with one line naming the folder,
// never reaching ClickHouse's own lock, and without a panic.
func TestSecondProcessOnSameDataFolder(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir, "")

	began := time.Now()
	code, out := runToExit(t, dir, 30*time.Second, "LOGBOOK_DATA_LOCK_WAIT=0")
	assert.Less(t, time.Since(began), 10*time.Second)
	assert.Equal(t, 1, code, out)
	abs, _ := filepath.Abs(dir)
	assert.Contains(t, out, abs)
	assert.Contains(t, out, "is used by another Logbook (pid ")
	assert.NotContains(t, out, "panic")
	assert.NotContains(t, out, "Cannot lock file", "the engine was never started")
	assert.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "one line: %s", out)

	// The first one still serves.
	res, err := http.Get("http://" + first.addr + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
}

// A Logbook started while the previous one is shutting down (SIGTERM) waits for the folder and
// then starts on it.
func TestRestartWhileClosingWaits(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir, "")
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGTERM))
	second := start(t, dir, "") // the default wait (15 s) covers the first one's shutdown
	<-first.done
	res, err := http.Get("http://" + second.addr + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
}

// A start-up step that fails (here the engine library is missing, after NATS started) exits with
// the step's error and no panic.
func TestFailedStartUpExitsCleanly(t *testing.T) {
	code, out := runToExit(t, t.TempDir(), 60*time.Second, "LOGBOOK_CHDB_LIB=/nonexistent/libchdb.so")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "make libchdb")
	assert.NotContains(t, out, "panic")
}
