package app

import (
	"bytes"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStageLabels checks that every part of a running Logbook carries its stage label, which make
// bench's CPU per stage depends on, and that starting it leaves the caller unlabelled.
func TestStageLabels(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	c.emit("org_stages", time.Now(), 1)
	c.waitFor("org_stages", 1)

	var b bytes.Buffer
	require.NoError(t, pprof.Lookup("goroutine").WriteTo(&b, 1))
	for _, s := range []string{StageHTTP, StageGateway, StageNATS, StageValidator, StageWriter, StageOutputs, StageQuery, StageOther} {
		assert.True(t, strings.Contains(b.String(), `# labels: {"`+StageLabel+`":"`+s+`"}`), "no goroutine labelled %s=%s", StageLabel, s)
	}
	// This goroutine started Logbook: a goroutine it starts now must not inherit a label.
	stop := make(chan struct{})
	defer close(stop)
	go parkedAfterStart(stop)
	require.Eventually(t, func() bool {
		b.Reset()
		require.NoError(t, pprof.Lookup("goroutine").WriteTo(&b, 1))
		return bytes.Contains(b.Bytes(), []byte("parkedAfterStart"))
	}, 5*time.Second, 10*time.Millisecond)
	for _, g := range bytes.Split(b.Bytes(), []byte("\n\n")) {
		if bytes.Contains(g, []byte("parkedAfterStart")) {
			assert.False(t, bytes.Contains(g, []byte("# labels")), "the goroutine that started Logbook kept a label:\n%s", g)
		}
	}
}

func parkedAfterStart(stop chan struct{}) { <-stop }
