package app

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
)

// In the single process, a retired version stops applying in the gateway and in the validator at
// once: an event naming it is answered, validated and stored under the version before it.
func TestRetiredSchemaVersionThroughThePipeline(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	for _, typ := range []string{"number", "string"} {
		r := c.do("POST", "/audit_logs/actions/doc.retired/schemas",
			[]byte(`{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"i":{"type":"`+typ+`"}}}}`))
		require.Equal(t, 201, r.status, "%s", r.raw)
	}
	version2 := func(i any) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(eventBody("org_retire", "doc.retired", time.Now().Add(-time.Minute), map[string]any{"i": i}), &m))
		m["event"].(map[string]any)["version"] = 2
		b, _ := json.Marshal(m)
		return b
	}
	require.Equal(t, 400, c.do("POST", "/audit_logs/events", version2(1)).status)

	r := c.do("POST", "/audit_logs/actions/doc.retired/schemas/2/retire", []byte(`{"reason":"i is a number"}`))
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, true, r.body["retired"])

	require.Equal(t, 200, c.do("POST", "/audit_logs/events", version2(1)).status)
	require.Equal(t, 400, c.do("POST", "/audit_logs/events", version2("x")).status, "version 1 applies")
	c.waitFor("org_retire", 1)
	assert.Zero(t, streamMsgs(t, a, event.StreamRejected), "the validator agrees with the gateway")
}
