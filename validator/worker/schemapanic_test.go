package worker_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
)

// A panic while validating one record (forced by the schema-validate-panic failpoint, inside
// pkg/schema's Validate, which recovers it for the gateway and the validator alike) sends that
// record to the rejected stream with the reason; the worker and the process carry on.
func TestValidationPanicRejectsTheRecord(t *testing.T) {
	const spec = "schema-validate-panic=value:doc.panics"
	if os.Getenv("LOGBOOK_FAILPOINTS") != spec {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "LOGBOOK_FAILPOINTS="+spec)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "the child test failed:\n%s", out)
		require.Contains(t, string(out), "--- PASS: "+t.Name())
		return
	}
	e := newEnv(t)
	d, err := schema.ParseDefinition([]byte(definition))
	require.NoError(t, err)
	_, err = e.reg.Create(context.Background(), "doc.panics", d)
	require.NoError(t, err)
	startWorker(t, e.js, e.reg, testConfig())

	bad := newRecord(t, "org_panic")
	bad.Event.Action = "doc.panics"
	publishRecord(t, e.js, bad)
	good := newRecord(t, "org_panic")
	publishRecord(t, e.js, good)
	require.Eventually(t, func() bool { return findByMsgID(t, e.js, event.StreamValid, good.MsgID()) != nil }, waitFor, tick)
	requireDrained(t, e.js)
	m := findByMsgID(t, e.js, event.StreamRejected, bad.MsgID())
	require.NotNil(t, m, "the record must be in the rejected stream")
	assert.Contains(t, m.Header.Get(event.HeaderRejectReason), "could not be validated")
}
