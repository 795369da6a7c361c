package app

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
)

func (c *client) bulk(body []byte, contentType string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.base+"/audit_logs/events/bulk", bytes.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+c.key)
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	var out map[string]any
	require.NoError(c.t, json.Unmarshal(raw, &out), "%s", raw)
	return res.StatusCode, out
}

func ndjsonLine(org string, i int, key string) string {
	var m map[string]any
	_ = json.Unmarshal(eventBody(org, "user.signed_in", time.Date(2026, 10, 1, 0, 0, i, 0, time.UTC), map[string]any{"i": i}), &m)
	if key != "" {
		m["idempotency_key"] = key
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestBulkIngestPerLineResults(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	lines := []string{
		ndjsonLine("org_bulk", 0, "k0"),
		`{"organization_id":`, // broken JSON in the middle
		ndjsonLine("org_bulk", 2, "k2"),
		`{"organization_id":"org_bulk","event":{"action":"x"}}`, // structurally invalid
		ndjsonLine("org bad", 4, ""),                            // bad organization id
		ndjsonLine("org_bulk", 5, ""),
		"",
		ndjsonLine("org_bulk", 7, "k7"),
	}
	status, out := c.bulk([]byte(strings.Join(lines, "\n")+"\n"), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", out)
	assert.Equal(t, float64(4), out["accepted"])
	assert.Equal(t, float64(4), out["failed"])
	results := out["results"].([]any)
	require.Len(t, results, len(lines))
	want := []struct {
		status string
		code   float64
	}{{"accepted", 0}, {"error", 400}, {"accepted", 0}, {"error", 422}, {"error", 422}, {"accepted", 0}, {"error", 400}, {"accepted", 0}}
	for i, w := range want {
		r := results[i].(map[string]any)
		assert.Equal(t, float64(i+1), r["line"])
		assert.Equal(t, w.status, r["status"], "line %d: %v", i+1, r)
		if w.status == "error" {
			e := r["error"].(map[string]any)
			assert.Equal(t, w.code, e["status"], "line %d", i+1)
			assert.NotEmpty(t, e["code"])
			assert.NotEmpty(t, e["message"])
		} else {
			assert.Len(t, r["id"], 26)
		}
	}
	c.waitFor("org_bulk", 4)

	// The same request again: keyed lines are duplicates, the unkeyed one is stored again (as a
	// producer without keys asked), the bad ones fail the same way.
	status, out = c.bulk([]byte(strings.Join(lines, "\n")), "application/x-ndjson")
	require.Equal(t, 200, status)
	assert.Equal(t, float64(3), out["duplicates"])
	assert.Equal(t, float64(1), out["accepted"])
	assert.Equal(t, results[0].(map[string]any)["id"], out["results"].([]any)[0].(map[string]any)["id"],
		"a duplicate names the event the first request stored")
	c.waitFor("org_bulk", 5)
	assert.Equal(t, uint64(5), storedCount(t, a, "org_bulk"), "the keyed lines sent again are not stored again")
}

func TestBulkIngestLimits(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	before := streamMsgs(t, a, event.StreamRaw)
	many := make([]string, 1001)
	for i := range many {
		many[i] = ndjsonLine("org_lim", i, "")
	}
	status, out := c.bulk([]byte(strings.Join(many, "\n")), "application/x-ndjson")
	assert.Equal(t, 413, status, "%v", out)
	assert.Equal(t, "too_many_events", out["code"])

	huge := ndjsonLine("org_lim", 1, "") + "\n" + strings.Repeat(" ", 5<<20)
	status, out = c.bulk([]byte(huge), "application/x-ndjson")
	assert.Equal(t, 413, status, "%v", out)

	status, out = c.bulk([]byte(ndjsonLine("org_lim", 1, "")), "application/json")
	assert.Equal(t, 415, status, "%v", out)

	status, out = c.bulk(nil, "application/x-ndjson")
	assert.Equal(t, 400, status, "%v", out)
	assert.Contains(t, out, "errors")
	assert.Equal(t, before, streamMsgs(t, a, event.StreamRaw), "refused requests publish nothing")

	// A full batch of 1,000 is accepted and stored.
	status, out = c.bulk([]byte(strings.Join(many[:1000], "\n")), "application/x-ndjson")
	require.Equal(t, 200, status)
	assert.Equal(t, float64(1000), out["accepted"])
	c.waitFor("org_lim", 1000)
	assert.Equal(t, uint64(1000), storedCount(t, a, "org_lim"))
}
