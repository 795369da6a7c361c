package sdktest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nodeScenario runs node/scenario.mjs phase with one Node SDK package and returns its output.
func nodeScenario(t *testing.T, pkg, phase, org, action string) map[string]any {
	t.Helper()
	node, err := exec.LookPath("node")
	require.NoError(t, err, "node is needed for the Node SDK tests (Node 20 or later)")
	dir := nodeSDKDir()
	_, err = os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json"))
	require.NoError(t, err, "the WorkOS Node SDKs are not installed in %s: run `make sdk`", dir)
	cmd := exec.Command(node, "node/scenario.mjs", phase)
	cmd.Env = append(os.Environ(), "SDK_DIR="+dir, "SDK_PACKAGE="+pkg, "BASE_URL="+baseURL,
		"API_KEY="+apiKey, "ORG="+org, "ACTION="+action)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	t.Logf("node %s %s: %s", pkg, phase, time.Since(start).Round(time.Millisecond))
	require.NoError(t, err, "scenario failed:\n%s", stderr.String())
	var out map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
	return out
}

func obj(t *testing.T, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "not an object: %#v", v)
	return m
}

func TestNodeSDK11(t *testing.T) {
	testNodeSDK(t, "workos-node-11", "11.0.0")
}

func TestNodeSDK8(t *testing.T) {
	testNodeSDK(t, "workos-node-8", "8.13.0")
}

func testNodeSDK(t *testing.T, pkg, version string) {
	org := uniqueOrg(strings.ReplaceAll(pkg, "-", "_"))
	action := "user.signed_in_" + strings.ReplaceAll(version, ".", "_")
	latest := version == "11.0.0"

	out := nodeScenario(t, pkg, "events", org, action)
	assert.Equal(t, version, out["sdk"])
	assert.Equal(t, baseURL, out["baseURL"])

	schema := obj(t, out["schema"])
	assert.Equal(t, "audit_log_schema", schema["object"])
	assert.Equal(t, float64(1), schema["version"])
	assert.Equal(t, map[string]any{"role": "string"}, obj(t, schema["actor"])["metadata"], "the SDK reads the schema back")
	assert.Equal(t, map[string]any{"attempts": "number"}, schema["metadata"])
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, schema["createdAt"])

	v := obj(t, out["schemaViolation"])
	assert.Equal(t, "BadRequestException", v["name"], "%v", v)
	assert.Equal(t, "invalid_audit_log_event", v["code"])
	require.NotEmpty(t, v["errors"])
	assert.Equal(t, "/metadata/attempts", obj(t, v["errors"].([]any)[0])["instancePath"])
	assert.Equal(t, "BadRequestException", obj(t, out["unknownVersion"])["name"])
	s := obj(t, out["structural"])
	assert.Equal(t, "UnprocessableEntityException", s["name"], "%v", s)
	assert.Contains(t, s["message"], "event.actor.id is required", "Node shows the errors' codes")
	k := obj(t, out["keyReused"])
	assert.Equal(t, float64(409), k["status"], "%v", k)
	assert.Equal(t, "UnauthorizedException", obj(t, out["wrongKey"])["name"])
	assert.Equal(t, "UnprocessableEntityException", obj(t, out["badSchema"])["name"])
	if latest {
		assert.Equal(t, "ConflictException", k["name"])
		assert.NotEmpty(t, v["requestID"], "Node 11 reads X-Request-ID")
		page := obj(t, out["schemaPage"])
		data := page["data"].([]any)
		require.Len(t, data, 1)
		assert.Equal(t, float64(2), obj(t, data[0])["version"], "newest first")
		assert.NotNil(t, obj(t, page["listMetadata"])["after"])
		next := obj(t, out["nextSchemaPage"])
		assert.Equal(t, float64(1), obj(t, next["data"].([]any)[0])["version"])
		assert.Nil(t, obj(t, next["listMetadata"])["after"], "the last page says after: null")
		assert.NotNil(t, obj(t, next["listMetadata"])["before"])
		assert.Equal(t, []any{float64(2), float64(1)}, out["allSchemaVersions"], "autoPagination")
		assert.Equal(t, "NotFoundException", obj(t, out["unknownAction"])["name"])
	} else {
		assert.NotContains(t, out["methods"], "listSchemas", "8.13 has no listSchemas")
	}

	// The export is requested at once, without waiting for the events to be stored: it holds
	// every event acknowledged before it.
	out = nodeScenario(t, pkg, "export", org, action)
	exp := obj(t, out["export"])
	assert.Equal(t, "pending", exp["state"])
	assert.Regexp(t, `^audit_log_export_`, exp["id"])
	assert.Nil(t, exp["url"])
	ready := obj(t, out["exportReady"])
	require.Equal(t, "ready", ready["state"], "%v", ready)
	dl := obj(t, out["download"])
	require.Equal(t, float64(200), dl["status"], "%v", dl)
	assert.Equal(t, "text/csv; charset=utf-8", dl["contentType"])
	csvRows := parseCSV(t, []byte(dl["body"].(string)))
	containsAll(t, column(t, csvRows, "actor_id"), "user_1", "user_2")
	assert.Equal(t, []string{action, action}, column(t, csvRows, "action"))
	assert.Equal(t, "invalid_audit_log_export_range_date", obj(t, out["badRange"])["code"])
	assert.Equal(t, "NotFoundException", obj(t, out["missingExport"])["name"])

	// Three accepted createEvent calls, one of them a retry: two events stored, once each.
	rows, distinct := storedEvents(t, org, 2)
	assert.Equal(t, uint64(2), rows)
	assert.Equal(t, uint64(2), distinct)

	if latest {
		assert.Equal(t, map[string]any{"retentionPeriodInDays": nil}, out["retentionBefore"], "a fresh organization has no retention")
		assert.Equal(t, map[string]any{"retentionPeriodInDays": float64(30)}, out["retentionSet"])
		assert.Equal(t, map[string]any{"retentionPeriodInDays": float64(30)}, out["retentionAfter"])
		assert.Equal(t, "UnprocessableEntityException", obj(t, out["retentionBad"])["name"])
		assert.Equal(t, uint16(30), logbookRetention(t, org), "the writer and the query API see it")
		rows, _ = storedEvents(t, org, 2)
		assert.Equal(t, uint64(2), rows, "recent events outlive a 30-day retention")
	}
}
