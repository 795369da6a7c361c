package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Exports take every search filter and can be NDJSON: one API event object per line.
func TestExportNDJSONWithSearchFilters(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	post := func(actorType, target, note string, minute int) {
		b, _ := json.Marshal(map[string]any{"organization_id": "org_nd", "event": map[string]any{
			"action": "doc.updated", "occurred_at": base.Add(time.Duration(minute) * time.Minute).Format(time.RFC3339Nano),
			"actor":   map[string]any{"id": "a_" + actorType, "type": actorType},
			"targets": []any{map[string]any{"id": target, "type": "document"}},
			"context": map[string]any{"location": "1.2.3.4"}, "metadata": map[string]any{"note": note, "n": json.Number("1.50")}}})
		r := c.do("POST", "/audit_logs/events", b)
		require.Equal(t, 200, r.status, "%s", r.raw)
	}
	post("user", "doc_1", "Quarterly report", 0)
	post("service", "doc_1", "Quarterly report", 1)
	post("user", "doc_2", "Quarterly report", 2)
	post("user", "doc_1", "weekly", 3)
	c.waitFor("org_nd", 4)

	body, _ := json.Marshal(map[string]any{"organization_id": "org_nd", "format": "ndjson",
		"actor_types": []string{"user"}, "target_ids": []string{"doc_1"}, "q": "QUARTERLY",
		"range_start": base.Add(-time.Minute).Format(time.RFC3339Nano), "range_end": time.Now().UTC().Format(time.RFC3339Nano)})
	res, data := c.exportFile(body)
	assert.Equal(t, "application/x-ndjson", res.Header.Get("Content-Type"))
	assert.Contains(t, res.Header.Get("Content-Disposition"), ".ndjson")

	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "%s", sc.Bytes())
		lines = append(lines, m)
	}
	require.Len(t, lines, 1, "only the user's event on doc_1 mentioning the quarterly report: %s", data)
	assert.Equal(t, "audit_log_event", lines[0]["object"])
	assert.Equal(t, "a_user", lines[0]["actor"].(map[string]any)["id"])
	assert.Contains(t, string(data), `"n":1.50`, "metadata numbers keep the digits they were sent with")

	for _, bad := range []map[string]any{{"format": "xml"}, {"q": 7}, {"actor_types": "user"}} {
		req := map[string]any{"organization_id": "org_nd", "range_start": base.Format(time.RFC3339Nano),
			"range_end": time.Now().UTC().Format(time.RFC3339Nano)}
		for k, v := range bad {
			req[k] = v
		}
		b, _ := json.Marshal(req)
		assert.Equal(t, 422, c.do("POST", "/audit_logs/exports", b).status, "%v", bad)
	}
}
