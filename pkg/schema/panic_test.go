package schema_test

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inChildWithFailpoints runs the calling test again in a child process with LOGBOOK_FAILPOINTS
// set (failpoints are read when the process starts) and reports whether this is the child.
func inChildWithFailpoints(t *testing.T, spec string) bool {
	t.Helper()
	if os.Getenv("LOGBOOK_FAILPOINTS") == spec {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "LOGBOOK_FAILPOINTS="+spec)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child test failed:\n%s", out)
	require.Contains(t, string(out), "--- PASS: "+t.Name())
	return false
}

// A panic inside validation (forced here by the schema-validate-panic failpoint) refuses that one
// event with a clear reason and a log line; the process and other events carry on.
func TestValidationPanicRefusesTheEvent(t *testing.T) {
	if !inChildWithFailpoints(t, "schema-validate-panic=value:doc.panics") {
		return
	}
	var logs bytes.Buffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	c := compile(t, nodeSchema)
	ev := okEvent()
	ev.Action = "doc.panics"
	errs := c.Validate(ev)
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Message, "could not be validated")
	assert.Contains(t, errs[0].Message, "failpoint schema-validate-panic")
	assert.Contains(t, logs.String(), "schema validation panicked")
	assert.Contains(t, logs.String(), "action=doc.panics")
	assert.Nil(t, c.Validate(okEvent()), "other events are validated as before")
}
