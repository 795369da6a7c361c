package app

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// emitMany sends n events of org from 8 producers at once and requires each to be acknowledged.
func (c *client) emitMany(org string, n int) {
	c.t.Helper()
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	at := time.Now().Add(-time.Minute)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				c.emit(org, at, i)
			}
		})
	}
	wg.Wait()
}

func csvRows(t *testing.T, link string) [][]string {
	t.Helper()
	res, b := download(t, link)
	require.Equal(t, 200, res.StatusCode, "%s", b)
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	require.NoError(t, err)
	return rows
}

// An export requested right after the events were acknowledged contains every one of them (the
// job waits for the pipeline to store what the raw stream held at the request), through the API
// and through the viewer portal; and GET /audit_logs/events/{id} of an id the gateway just
// answered finds the event. The writer batches for 1 s, as by default.
func TestExportReadsItsWrites(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_BATCH_WAIT": "1s"})
	c := a.client(t, testKey)
	const n = 200
	rangeBody := func(org string) []byte {
		b, _ := json.Marshal(map[string]any{"organization_id": org,
			"range_start": time.Now().Add(-time.Hour).Format(time.RFC3339), "range_end": time.Now().Add(time.Hour).Format(time.RFC3339)})
		return b
	}

	c.emitMany("org_ryw", n)
	r := c.do("POST", "/audit_logs/exports", rangeBody("org_ryw"))
	require.Equal(t, 201, r.status, "%s", r.raw)
	r = c.pollExport(r.body["id"].(string))
	require.Equal(t, "ready", r.body["state"], "%s", r.raw)
	assert.Equal(t, n+1, len(csvRows(t, r.body["url"].(string))), "every acknowledged event and the header")

	// The portal's export goes through the same job.
	c.emitMany("org_ryw_portal", n)
	link := c.do("POST", "/portal/links", []byte(`{"organization_id":"org_ryw_portal"}`))
	require.Equal(t, 201, link.status, "%s", link.raw)
	u, err := url.Parse(link.body["url"].(string))
	require.NoError(t, err)
	viewer := &client{t: t, base: c.base, key: u.Query().Get("token")}
	r = viewer.do("POST", "/portal/api/exports", []byte(`{}`))
	require.Equal(t, 201, r.status, "%s", r.raw)
	id, handle := r.body["id"].(string), r.body["handle"].(string)
	require.Eventually(t, func() bool {
		r = viewer.do("GET", "/portal/api/exports/"+id+"?handle="+url.QueryEscape(handle), nil)
		return r.status == 200 && r.body["state"] != "pending"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "ready", r.body["state"], "%s", r.raw)
	assert.Equal(t, n+1, len(csvRows(t, r.body["url"].(string))))
}

// GET /audit_logs/events/{id} of an id the gateway answered a moment ago (a bulk line's id) finds
// the event: a recent id that is not stored yet waits for the pipeline before a 404.
func TestGetEventReadsItsWrites(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_BATCH_WAIT": "1s"})
	c := a.client(t, testKey)
	var lines []string
	for i := range 5 {
		lines = append(lines, string(eventBody("org_get", "user.signed_in", time.Now().Add(-time.Minute), map[string]any{"i": i})))
	}
	r := c.do("POST", "/audit_logs/events/bulk", []byte(strings.Join(lines, "\n")), "Content-Type", "application/x-ndjson")
	require.Equal(t, 200, r.status, "%s", r.raw)
	results := r.body["results"].([]any)
	require.Len(t, results, 5)
	for _, res := range results {
		id := res.(map[string]any)["id"].(string)
		g := c.do("GET", "/audit_logs/events/"+id+"?organization_id=org_get", nil)
		require.Equal(t, 200, g.status, "%s", g.raw)
		assert.Equal(t, id, g.body["id"])
	}
	// An id that is not recent (or not an id) is a 404 at once.
	began := time.Now()
	g := c.do("GET", fmt.Sprintf("/audit_logs/events/%s?organization_id=org_get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), nil)
	assert.Equal(t, 404, g.status)
	assert.Less(t, time.Since(began), 2*time.Second)
}
