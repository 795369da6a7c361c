package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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

func bulkBody(org string, n int) []byte {
	var lines []string
	for i := range n {
		lines = append(lines, string(eventBody(org, "user.signed_in", time.Now().Add(-time.Minute), map[string]any{"i": i})))
	}
	return []byte(strings.Join(lines, "\n"))
}

// The per-key rate limit counts a bulk request by its events: with 10 tokens, one bulk of 8
// passes and the next is refused with 429 and Retry-After; a bulk larger than the burst is a 413.
func TestBulkCountsEventsAgainstTheRateLimit(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_RATE_LIMIT": "1", "LOGBOOK_RATE_BURST": "10"})
	c := a.client(t, testKey)
	bulk := func(n int) response {
		return c.do("POST", "/audit_logs/events/bulk", bulkBody("org_rl", n), "Content-Type", "application/x-ndjson")
	}
	r := bulk(8)
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, float64(8), r.body["accepted"])
	r = bulk(8)
	require.Equal(t, 429, r.status, "%s", r.raw)
	assert.Equal(t, "rate_limit_exceeded", r.body["code"])
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	r = bulk(11)
	require.Equal(t, 413, r.status, "%s", r.raw)
	assert.Contains(t, r.body["message"], "LOGBOOK_RATE_BURST")
}

// Each viewer link has its own bucket: past it the viewer API answers 429; another link of the
// same organization, and the API key, are not slowed.
func TestPortalLinkRateLimit(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_PORTAL_RATE_LIMIT": "1", "LOGBOOK_PORTAL_RATE_BURST": "3"})
	c := a.client(t, testKey)
	viewer := func() *client {
		r := c.do("POST", "/portal/links", []byte(`{"organization_id":"org_view"}`))
		require.Equal(t, 201, r.status, "%s", r.raw)
		u, err := url.Parse(r.body["url"].(string))
		require.NoError(t, err)
		return &client{t: t, base: c.base, key: u.Query().Get("token")}
	}
	v1 := viewer()
	for range 3 {
		require.Equal(t, 200, v1.do("GET", "/portal/api/audit_logs/events?limit=100", nil).status)
	}
	r := v1.do("GET", "/portal/api/audit_logs/events?limit=100", nil)
	require.Equal(t, 429, r.status, "%s", r.raw)
	assert.Equal(t, "rate_limit_exceeded", r.body["code"])
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	time.Sleep(1100 * time.Millisecond) // a link made in the same second would be the same token
	v2 := viewer()
	for range 3 {
		assert.Equal(t, 200, v2.do("GET", "/portal/api/audit_logs/events", nil).status, "another link keeps its own bucket")
	}
	assert.Equal(t, 200, c.list("organization_id=org_view").status, "the API key is not slowed")
}

// Over HTTP: an organization's second export while its first is in progress is refused with 429
// (LOGBOOK_EXPORT_MAX_PER_ORG=1), and an export larger than the export store fails instead of
// filling the disk (LOGBOOK_EXPORT_STORE_MAX_BYTES=1 MiB).
func TestExportCapsOverHTTP(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_BATCH_WAIT": "1s",
		"LOGBOOK_EXPORT_MAX_PER_ORG": "1", "LOGBOOK_EXPORT_STORE_MAX_BYTES": "1048576"})
	c := a.client(t, testKey)
	for range 8 { // 8,000 events, about 3 MB of CSV
		r := c.do("POST", "/audit_logs/events/bulk", bulkBody("org_cap", 1000), "Content-Type", "application/x-ndjson")
		require.Equal(t, 200, r.status, "%s", r.raw)
	}
	body, _ := json.Marshal(map[string]any{"organization_id": "org_cap",
		"range_start": time.Now().Add(-time.Hour).Format(time.RFC3339), "range_end": time.Now().Add(time.Hour).Format(time.RFC3339)})
	first := c.do("POST", "/audit_logs/exports", body)
	require.Equal(t, 201, first.status, "%s", first.raw)
	second := c.do("POST", "/audit_logs/exports", body) // the first waits for the writer's batch
	require.Equal(t, 429, second.status, "%s", second.raw)
	assert.Equal(t, "too_many_exports", second.body["code"])
	assert.NotEmpty(t, second.header.Get("Retry-After"))

	r := c.pollExport(first.body["id"].(string))
	assert.Equal(t, "error", r.body["state"], "3 MB do not fit in a 1 MiB store: %s", r.raw)
	r = c.do("POST", "/audit_logs/exports", body)
	assert.Equal(t, 201, r.status, "the finished export gave its slot back: %s", r.raw)
}

// The listener has read and idle timeouts (here 1 s each): a body that trickles in is cut, and an
// idle kept-alive connection is closed. (pkg/wire's tests show that a streamed download outlives
// the write timeout.)
func TestHTTPTimeouts(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_HTTP_READ_TIMEOUT": "1s", "LOGBOOK_HTTP_IDLE_TIMEOUT": "1s"})
	conn, err := net.Dial("tcp", a.Addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /audit_logs/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n", testKey)
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 100 ms: the body would take 100 s
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	began := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.ReadAll(conn)
	assert.Less(t, time.Since(began), 5*time.Second, "the trickled body was cut")

	idle, err := net.Dial("tcp", a.Addr)
	require.NoError(t, err)
	defer idle.Close()
	_, err = fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	r := bufio.NewReader(idle)
	res, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	_, _ = io.ReadAll(res.Body)
	res.Body.Close()
	began = time.Now()
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = r.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the idle connection was closed")
	assert.Less(t, time.Since(began), 5*time.Second)
}

// Eight free-text searches at a time, over and over, while events keep arriving: every event is
// acknowledged and stored, readiness stays ok, and every search answers correctly. (How much
// the searches slow ingest is measured by make bench, not here.)
func TestHeavySearchesAlongsideIngest(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_RATE_LIMIT": "0"})
	c := a.client(t, testKey)
	for range 10 {
		r := c.do("POST", "/audit_logs/events/bulk", bulkBody("org_heavy", 1000), "Content-Type", "application/x-ndjson")
		require.Equal(t, 200, r.status, "%s", r.raw)
	}
	require.Eventually(t, func() bool { return storedCount(t, a, "org_heavy") == 10_000 }, 60*time.Second, 50*time.Millisecond)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var searches atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// No event holds this text: the search reads every row of the organization.
				r := c.list(fmt.Sprintf("organization_id=org_heavy&limit=50&q=absent-%d-%d", w, i))
				if !assert.Equal(t, 200, r.status, "%s", r.raw) {
					return
				}
				assert.Empty(t, r.body["data"])
				searches.Add(1)
			}
		})
	}
	for i := range 100 {
		c.emit("org_live", time.Now().Add(-time.Minute), i)
		if i%20 == 0 {
			res, err := http.Get("http://" + a.Addr + "/readyz")
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, 200, res.StatusCode, "ready while searches run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return storedCount(t, a, "org_live") == 100 }, 60*time.Second, 50*time.Millisecond)
	assert.Len(t, c.waitFor("org_live", 100), 100)
	close(stop)
	wg.Wait()
	assert.Positive(t, searches.Load())
}
