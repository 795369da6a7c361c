package gateway_test

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/ingest/gateway"
)

// Bodies mean what they say: a duplicate member name or invalid UTF-8 anywhere is a 400 in the
// envelope on the single, bulk (per line) and schema endpoints, and changes nothing.
func TestAmbiguousBodiesAre400(t *testing.T) {
	e := newEnv(t)
	bodies := map[string]string{
		"duplicate at the top":         strings.Replace(workosBody, `{"organization_id"`, `{"organization_id":"org_x","organization_id"`, 1),
		"duplicate in the event":       strings.Replace(workosBody, `"action":"user.signed_in"`, `"action":"user.deleted","action":"user.signed_in"`, 1),
		"duplicate in actor metadata":  strings.Replace(workosBody, `{"role":"admin"}`, `{"role":"viewer","role":"admin"}`, 1),
		"duplicate in a target":        strings.Replace(workosBody, `"id":"team_123"`, `"id":"team_9","id":"team_123"`, 1),
		"duplicate in event metadata":  strings.Replace(workosBody, `"attempts":3`, `"attempts":1,"attempts":3`, 1),
		"invalid UTF-8 in a value":     strings.Replace(workosBody, `"Jon Smith"`, "\"Jon \xff Smith\"", 1),
		"invalid UTF-8 in a key":       strings.Replace(workosBody, `"admin":true`, "\"adm\xffin\":true", 1),
		"invalid UTF-8 in the context": strings.Replace(workosBody, `Chrome/104.0.0.0`, "Chrome/\xc0\xaf", 1),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			require.NotEqual(t, workosBody, body)
			var loose map[string]any
			require.NoError(t, json.Unmarshal([]byte(body), &loose), "encoding/json would take it")
			r := e.postEvent(t, body, nil)
			m := requireEnvelope(t, r, http.StatusBadRequest, "invalid_request_body")
			assert.Contains(t, m, "errors")

			line := strings.ReplaceAll(body, "\n", "")
			out := e.bulk(t, line, strings.ReplaceAll(workosBody, "\n", ""))
			require.Len(t, out.Results, 2)
			assert.Equal(t, gateway.LineError, out.Results[0].Status)
			assert.Equal(t, http.StatusBadRequest, out.Results[0].Error.Status)
			assert.Equal(t, "invalid_request_body", out.Results[0].Error.Code)
			assert.Equal(t, gateway.LineAccepted, out.Results[1].Status, "a bad line never costs the good ones")
		})
	}
	assert.Equal(t, uint64(len(bodies)), e.rawCount(t), "only the good bulk lines were published")

	schemas := map[string]string{
		"duplicate target type key": `{"targets":[{"type":"team","type":"user"}]}`,
		"duplicate in a schema":     `{"targets":[{"type":"team"}],"metadata":{"type":"object","type":"string"}}`,
		"duplicate properties":      `{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"a":{"type":"string"},"a":{"type":"number"}}}}`,
		"invalid UTF-8":             "{\"targets\":[{\"type\":\"team\"}],\"metadata\":{\"type\":\"object\",\"description\":\"\xff\"}}",
	}
	for name, body := range schemas {
		t.Run("schema "+name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", body, nil)
			requireEnvelope(t, r, http.StatusBadRequest, "invalid_request_body")
			r = e.do(t, http.MethodPost, "/organizations/"+org+"/audit_logs/actions/user.signed_in/schemas", body, nil)
			requireEnvelope(t, r, http.StatusBadRequest, "invalid_request_body")
		})
	}
	// Nothing was registered.
	requireEnvelope(t, e.do(t, http.MethodGet, "/audit_logs/actions/user.signed_in/schemas", "", nil), http.StatusNotFound, "")
}

// A bulk line over the single-event body limit is refused in its result (413) before it is
// decoded: the request costs about the memory of its bytes, not of decoding a 5 MB value.
func TestBulkLineOverTheBodyLimitIsNotDecoded(t *testing.T) {
	e := newEnv(t)
	// One 5 MB line: a JSON array of small objects, what costs a decoder the most per byte.
	big := `{"organization_id":"` + org + `","event":{"action":"a","metadata":{"x":[` +
		strings.Repeat(`{"a":[1,2,3]},`, (gateway.MaxBulkBytes-4096)/14) + `{}]}}}`
	require.Less(t, len(big), gateway.MaxBulkBytes)
	require.Greater(t, len(big), 5_000_000)
	body := big + "\n" + strings.ReplaceAll(workosBody, "\n", "")

	var out gateway.BulkResponse
	allocated := allocatedBy(func() {
		r := e.do(t, http.MethodPost, "/audit_logs/events/bulk", body, map[string]string{"Content-Type": "application/x-ndjson"})
		require.Equal(t, http.StatusOK, r.Code, "body: %.500s", r.Body)
		require.NoError(t, json.Unmarshal(r.Body, &out))
	})
	require.Len(t, out.Results, 2)
	assert.Equal(t, gateway.LineError, out.Results[0].Status)
	assert.Equal(t, http.StatusRequestEntityTooLarge, out.Results[0].Error.Status)
	assert.Equal(t, "payload_too_large", out.Results[0].Error.Code)
	assert.Equal(t, gateway.LineAccepted, out.Results[1].Status)
	t.Logf("a request holding a %d-byte line allocated %.1f MiB", len(big), float64(allocated)/(1<<20))
	// Reading the request (the test's copy, the server's read buffer) costs a few times its size;
	// decoding the line would cost tens of times more.
	assert.Less(t, allocated, uint64(8*len(body)), "the line was decoded")
}

// allocatedBy returns how many heap bytes f (and whatever ran meanwhile) allocated.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
