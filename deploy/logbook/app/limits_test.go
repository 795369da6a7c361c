package app

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A search or export past its ClickHouse limits (forced tiny through the configuration) answers a
// clear error in the WorkOS envelope instead of running on: 422 query_too_expensive naming the
// variable for a search, state "error" at once for an export.
func TestSearchAndExportLimitsAnswerClearly(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_SEARCH_MAX_ROWS_TO_READ": "1", "LOGBOOK_EXPORT_MAX_ROWS_TO_READ": "1"})
	c := a.client(t, testKey)
	at := time.Now().Add(-time.Minute)
	for i := range 3 {
		c.emit("org_lim", at, i)
	}
	require.Eventually(t, func() bool { return storedCount(t, a, "org_lim") == 3 }, 20*time.Second, 20*time.Millisecond)

	r := c.list("organization_id=org_lim")
	require.Equal(t, 422, r.status, "%s", r.raw)
	assert.Equal(t, "query_too_expensive", r.body["code"])
	assert.Contains(t, r.body["message"], "LOGBOOK_SEARCH_MAX_ROWS_TO_READ")
	assert.NotNil(t, r.body["errors"])

	body, _ := json.Marshal(map[string]any{"organization_id": "org_lim",
		"range_start": at.Add(-time.Hour).Format(time.RFC3339), "range_end": time.Now().Add(time.Hour).Format(time.RFC3339)})
	r = c.do("POST", "/audit_logs/exports", body)
	require.Equal(t, 201, r.status, "%s", r.raw)
	began := time.Now()
	r = c.pollExport(r.body["id"].(string))
	assert.Equal(t, "error", r.body["state"], "%s", r.raw)
	assert.Less(t, time.Since(began), 20*time.Second, "the export failed at once, not after its retries")
}
