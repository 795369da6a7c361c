package faults

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A LOGBOOK_FAILPOINTS value that does not parse stops start-up with an error naming the bad item:
// a typo must not silently inject nothing and let a fault test pass without its fault.
func TestBadFailpointsStopStartUp(t *testing.T) {
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "LOGBOOK_DATA_DIR="+t.TempDir(), "LOGBOOK_ADDR="+freeAddr(t),
		"LOGBOOK_API_KEY="+apiKey, "LOGBOOK_FAILPOINTS=writer-after-record=kill@2,writer-after-insert=kil@3")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("logbook started with a bad LOGBOOK_FAILPOINTS:\n%s", out)
	}
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "logbook must exit non-zero:\n%s", out)
	assert.NotZero(t, exit.ExitCode())
	assert.Contains(t, string(out), "writer-after-insert=kil@3", "the message names the bad item")
	assert.False(t, strings.Contains(string(out), "listening"), "nothing was started:\n%s", out)
}
