package app

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
)

// bucketKeys counts the keys of a key-value bucket.
func bucketKeys(t *testing.T, a *App, bucket string) int {
	t.Helper()
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), bucket)
	require.NoError(t, err)
	l, err := kv.ListKeys(t.Context())
	require.NoError(t, err)
	n := 0
	for range l.Keys() {
		n++
	}
	return n
}

// Every endpoint refuses malformed JSON, wrong types, unknown fields, huge values, odd path
// parameters and a wrong key with the right status and envelope, and changes nothing.
func TestBadInputPerEndpoint(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	require.Equal(t, 201, c.do("POST", "/audit_logs/actions/doc.ok/schemas", []byte(`{"targets":[{"type":"team"}]}`)).status)
	c.emit("org_bad", time.Now().Add(-time.Minute), 1)
	c.waitFor("org_bad", 1)
	huge := strings.Repeat("x", 300<<10)
	now := time.Now().UTC()
	rng := `"range_start":"` + now.Add(-time.Hour).Format(time.RFC3339) + `","range_end":"` + now.Format(time.RFC3339) + `"`
	tests := []struct {
		name, method, path, body string
		key                      string
		status                   int
		code                     string
	}{
		// Schemas.
		{"schema: malformed JSON", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":`, testKey, 422, "invalid_schema"},
		{"schema: wrong types", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":"team"}`, testKey, 422, "invalid_schema"},
		{"schema: unknown field", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}],"colour":1}`, testKey, 422, "invalid_schema"},
		{"schema: huge", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"` + huge + `"}]}`, testKey, 413, "payload_too_large"},
		{"schema: file $ref", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}],"metadata":{"$ref":"file:///etc/passwd"}}`, testKey, 422, "invalid_schema"},
		{"schema: %2F in action", "POST", "/audit_logs/actions/doc%2Fx/schemas", `{"targets":[{"type":"t"}]}`, testKey, 422, "invalid_action"},
		{"schema: unicode action", "POST", "/audit_logs/actions/d%C3%B6c.x/schemas", `{"targets":[{"type":"t"}]}`, testKey, 422, "invalid_action"},
		{"schema: .. as action", "POST", "/audit_logs/actions/%2E%2E/schemas", `{"targets":[{"type":"t"}]}`, testKey, 422, "invalid_action"},
		{"schema: bad org", "POST", "/organizations/org%2Fx/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, testKey, 404, "not_found"},
		{"schema: wrong key", "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, "sk_wrong_0123456789abcdef", 401, "unauthorized"},
		{"schema list: unknown action", "GET", "/audit_logs/actions/doc.none/schemas", ``, testKey, 404, "not_found"},
		{"schema list: odd action", "GET", "/audit_logs/actions/..%2F..%2Fetc/schemas", ``, testKey, 404, "not_found"},
		{"schema list: bad limit", "GET", "/audit_logs/actions/doc.ok/schemas?limit=101", ``, testKey, 400, "invalid_query_parameter"},
		{"schema list: bad cursor", "GET", "/audit_logs/actions/doc.ok/schemas?after=als_Zm9v", ``, testKey, 400, "invalid_query_parameter"},
		{"actions: bad order", "GET", "/audit_logs/actions?order=up", ``, testKey, 400, "invalid_query_parameter"},
		{"actions: unknown parameter", "GET", "/audit_logs/actions?colour=red", ``, testKey, 400, "invalid_query_parameter"},
		{"actions: wrong key", "GET", "/audit_logs/actions", ``, "", 401, "unauthorized"},
		// Exports.
		{"export: malformed JSON", "POST", "/audit_logs/exports", `{"organization_id":`, testKey, 400, "invalid_request_body"},
		{"export: wrong types", "POST", "/audit_logs/exports", `{"organization_id":1,` + rng + `,"actions":"a"}`, testKey, 422, "unprocessable_entity"},
		{"export: unknown field", "POST", "/audit_logs/exports", `{"organization_id":"org_bad",` + rng + `,"colour":"red"}`, testKey, 422, "unprocessable_entity"},
		{"export: missing range", "POST", "/audit_logs/exports", `{"organization_id":"org_bad"}`, testKey, 422, "unprocessable_entity"},
		{"export: inverted range", "POST", "/audit_logs/exports", `{"organization_id":"org_bad","range_start":"2026-02-01T00:00:00Z","range_end":"2026-01-01T00:00:00Z"}`, testKey, 400, "invalid_audit_log_export_range_date"},
		{"export: malformed date", "POST", "/audit_logs/exports", `{"organization_id":"org_bad","range_start":"last week","range_end":"2026-01-01T00:00:00Z"}`, testKey, 400, "invalid_audit_log_export_range_date"},
		{"export: huge", "POST", "/audit_logs/exports", `{"organization_id":"org_bad",` + rng + `,"actions":["` + huge + `"]}`, testKey, 413, "payload_too_large"},
		{"export: org with subject chars", "POST", "/audit_logs/exports", `{"organization_id":"org.*",` + rng + `}`, testKey, 422, "unprocessable_entity"},
		{"export: wrong key", "POST", "/audit_logs/exports", `{"organization_id":"org_bad",` + rng + `}`, "sk_wrong_0123456789abcdef", 401, "unauthorized"},
		{"export get: odd id", "GET", "/audit_logs/exports/..%2F..%2Fetc", ``, testKey, 404, "not_found"},
		{"export get: unicode id", "GET", "/audit_logs/exports/audit_log_export_%C3%A9", ``, testKey, 404, "not_found"},
		{"export download: no signature", "GET", "/audit_logs/exports/audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FAV/download", ``, "", 403, "invalid_signature"},
		// Retention.
		{"retention: malformed JSON", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period_in_days":`, testKey, 400, "invalid_request_body"},
		{"retention: wrong type", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period_in_days":"30"}`, testKey, 422, "invalid_retention_period"},
		{"retention: fraction", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period_in_days":30.5}`, testKey, 422, "invalid_retention_period"},
		{"retention: huge", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period_in_days":99999999999999999999}`, testKey, 422, "invalid_retention_period"},
		{"retention: unknown period", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period":"12_MONTHS"}`, testKey, 422, "invalid_retention_period"},
		{"retention: both forms", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period":"1_MONTH","retention_period_in_days":30}`, testKey, 422, "invalid_retention_period"},
		{"retention: unknown field", "PUT", "/organizations/org_bad/audit_logs_retention", `{"days":30}`, testKey, 422, "invalid_retention_period"},
		{"retention: empty", "PUT", "/organizations/org_bad/audit_logs_retention", `{}`, testKey, 422, "invalid_retention_period"},
		{"retention: body too large", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period":"` + huge + `"}`, testKey, 413, "payload_too_large"},
		{"retention: %2F in org", "PUT", "/organizations/org%2F..%2Fx/audit_logs_retention", `{"retention_period_in_days":30}`, testKey, 404, "not_found"},
		{"retention: unicode org", "GET", "/organizations/%E2%98%83/audit_logs_retention", ``, testKey, 404, "not_found"},
		{"retention: wrong key", "PUT", "/organizations/org_bad/audit_logs_retention", `{"retention_period_in_days":30}`, "sk_wrong_0123456789abcdef", 401, "unauthorized"},
		// Events (the rest is in TestBadInputChangesNothing).
		{"event get: odd id", "GET", "/audit_logs/events/..%2F..?organization_id=org_bad", ``, testKey, 404, "not_found"},
	}
	raw := streamMsgs(t, a, event.StreamRaw)
	schemas := bucketKeys(t, a, event.BucketSchemas)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.client(t, tt.key).do(tt.method, tt.path, []byte(tt.body))
			assert.Equal(t, tt.status, r.status, "%s", r.raw)
			assert.Equal(t, tt.code, r.body["code"], "%s", r.raw)
			assert.NotEmpty(t, r.body["message"])
			if tt.status == 400 {
				assert.Contains(t, r.body, "errors", "a 400 carries code and errors (Node's BadRequestException): %s", r.raw)
			}
			if tt.status == 422 {
				assert.NotEmpty(t, r.body["errors"], "a 422 says what to fix: %s", r.raw)
			}
		})
	}
	assert.Equal(t, raw, streamMsgs(t, a, event.StreamRaw), "nothing published")
	assert.Equal(t, schemas, bucketKeys(t, a, event.BucketSchemas), "no schema stored")
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	exports, err := js.KeyValue(t.Context(), event.BucketExports)
	require.NoError(t, err)
	_, err = exports.ListKeys(t.Context())
	if err == nil {
		assert.Zero(t, bucketKeys(t, a, event.BucketExports), "no export created")
	}
	r := c.do("GET", "/organizations/org_bad/audit_logs_retention", nil)
	assert.Equal(t, `{"retention_period_in_days":null}`, strings.TrimSpace(string(r.raw)), "no retention stored")
	assert.Equal(t, uint64(1), storedCount(t, a, "org_bad"))
	var body map[string]any
	require.NoError(t, json.Unmarshal(c.do("GET", "/audit_logs/actions", nil).raw, &body))
	assert.Len(t, body["data"], 1)
}
