package app

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// startEnv runs a real single-process Logbook with the test defaults plus env.
func startEnv(t *testing.T, env map[string]string) *App {
	t.Helper()
	m := map[string]string{
		"LOGBOOK_DATA_DIR":   t.TempDir(),
		"LOGBOOK_ADDR":       "127.0.0.1:0",
		"LOGBOOK_API_KEY":    testKey,
		"LOGBOOK_BATCH_WAIT": "50ms",
	}
	for k, v := range env {
		m[k] = v
	}
	e := config.FromMap(m)
	cfg := ConfigFromEnv(e)
	require.NoError(t, e.Err())
	cfg.StopMerges = true // every stored row stays visible to storedCount and storetest.Copies
	a, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a
}

// storedCount is how many rows org has in ClickHouse, counted by storetest.Copies (merges are
// stopped in these tests, so no duplicate row has been merged away), and it fails the test if an
// event is held by more than one row.
func storedCount(t *testing.T, a *App, org string) uint64 {
	t.Helper()
	var n uint64
	for id, rows := range storetest.Copies(t, a.store, org) {
		assert.Equal(t, uint64(1), rows, "event %s of %s is stored %d times", id, org, rows)
		n += rows
	}
	return n
}

// The Idempotency-Key outlives JetStream's duplicate window (here 1 s): a repeat is answered 200
// without publishing, a reused key with another body is 409 idempotency_error, and concurrent
// repeats store one event.
func TestIdempotencyKeyIsKeptBeyondTheDuplicateWindow(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_STREAM_DUPLICATES": "1s"})
	c := a.client(t, testKey)
	at := time.Now().Add(-time.Hour)
	body := eventBody("org_idem", "user.signed_in", at, map[string]any{"n": 1})
	r := c.do("POST", "/audit_logs/events", body, "Idempotency-Key", "k-1")
	require.Equal(t, 200, r.status, "%s", r.raw)
	raw := streamMsgs(t, a, event.StreamRaw)

	time.Sleep(1500 * time.Millisecond) // past JetStream's window
	r = c.do("POST", "/audit_logs/events", body, "Idempotency-Key", "k-1")
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, true, r.body["success"])
	assert.Equal(t, raw, streamMsgs(t, a, event.StreamRaw), "a repeat publishes nothing")

	other := eventBody("org_idem", "user.signed_in", at, map[string]any{"n": 2})
	r = c.do("POST", "/audit_logs/events", other, "Idempotency-Key", "k-1")
	require.Equal(t, 409, r.status, "%s", r.raw)
	assert.Equal(t, "idempotency_error", r.body["code"])
	assert.NotEmpty(t, r.body["message"])
	assert.Equal(t, raw, streamMsgs(t, a, event.StreamRaw), "a refused key publishes nothing")

	// Key order and white space do not make another request.
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	pretty, _ := json.MarshalIndent(m, "", "   ")
	r = c.do("POST", "/audit_logs/events", pretty, "Idempotency-Key", "k-1")
	require.Equal(t, 200, r.status, "%s", r.raw)

	// Twenty concurrent attempts with one key store one event.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.do("POST", "/audit_logs/events", eventBody("org_idem", "user.signed_in", at, map[string]any{"n": 3}), "Idempotency-Key", "k-2")
			assert.Equal(t, 200, r.status, "%s", r.raw)
		}()
	}
	wg.Wait()
	c.waitFor("org_idem", 2)
	time.Sleep(300 * time.Millisecond)
	c.waitFor("org_idem", 2)
	assert.Equal(t, uint64(2), storedCount(t, a, "org_idem"))
}

func TestSchemaListsAndOrganizationSchemas(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	schemaBody := func(metaType string) []byte {
		return []byte(`{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"i":{"type":"` + metaType + `"}}}}`)
	}
	for i := 0; i < 3; i++ {
		r := c.do("POST", "/audit_logs/actions/doc.updated/schemas", schemaBody("number"))
		require.Equal(t, 201, r.status, "%s", r.raw)
	}
	for _, action := range []string{"a.one", "a.two", "a.three"} {
		// Actions are ordered by their first schema's creation time (milliseconds; ties by name):
		// keep the three apart so the expected order is the creation order.
		time.Sleep(3 * time.Millisecond)
		require.Equal(t, 201, c.do("POST", "/audit_logs/actions/"+action+"/schemas", schemaBody("number")).status)
	}

	// Versions newest first, two per page, until after is null.
	var versions []float64
	q := "limit=2"
	for page := 0; ; page++ {
		r := c.do("GET", "/audit_logs/actions/doc.updated/schemas?"+q, nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		assert.Equal(t, "list", r.body["object"])
		for _, d := range r.body["data"].([]any) {
			s := d.(map[string]any)
			assert.Equal(t, "audit_log_schema", s["object"])
			versions = append(versions, s["version"].(float64))
		}
		meta := r.body["list_metadata"].(map[string]any)
		if page == 0 {
			assert.Nil(t, meta["before"])
		}
		if meta["after"] == nil {
			break
		}
		q = "limit=2&after=" + url.QueryEscape(meta["after"].(string))
		require.Less(t, page, 5)
	}
	assert.Equal(t, []float64{3, 2, 1}, versions)
	r := c.do("GET", "/audit_logs/actions/doc.updated/schemas?order=asc&limit=100", nil)
	require.Len(t, r.body["data"], 3)
	assert.Equal(t, float64(1), r.body["data"].([]any)[0].(map[string]any)["version"])
	assert.Nil(t, r.body["list_metadata"].(map[string]any)["after"])

	// Actions: newest first by default, each with its latest schema.
	r = c.do("GET", "/audit_logs/actions?limit=100", nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	var names []string
	for _, d := range r.body["data"].([]any) {
		act := d.(map[string]any)
		assert.Equal(t, "audit_log_action", act["object"])
		names = append(names, act["name"].(string))
		if act["name"] == "doc.updated" {
			assert.Equal(t, float64(3), act["schema"].(map[string]any)["version"])
		}
		assert.Regexp(t, `\.\d{3}Z$`, act["created_at"])
	}
	assert.Equal(t, []string{"a.three", "a.two", "a.one", "doc.updated"}, names)
	r = c.do("GET", "/audit_logs/actions?limit=3", nil)
	after := r.body["list_metadata"].(map[string]any)["after"].(string)
	r = c.do("GET", "/audit_logs/actions?limit=3&after="+url.QueryEscape(after), nil)
	require.Len(t, r.body["data"], 1)
	assert.Nil(t, r.body["list_metadata"].(map[string]any)["after"])
	before := r.body["list_metadata"].(map[string]any)["before"].(string)
	r = c.do("GET", "/audit_logs/actions?limit=3&before="+url.QueryEscape(before), nil)
	require.Len(t, r.body["data"], 3)

	assert.Equal(t, 404, c.do("GET", "/audit_logs/actions/no.such/schemas", nil).status)

	// An organization's own schema wins for its events, in the gateway and in the validator.
	r = c.do("POST", "/organizations/org_own/audit_logs/actions/doc.updated/schemas", schemaBody("string"))
	require.Equal(t, 201, r.status, "%s", r.raw)
	assert.Equal(t, float64(1), r.body["version"])
	r = c.do("GET", "/organizations/org_own/audit_logs/actions/doc.updated/schemas", nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.Len(t, r.body["data"], 1)
	at := time.Now().Add(-time.Minute)
	numberMeta := eventBody("org_own", "doc.updated", at, map[string]any{"i": 1})
	r = c.do("POST", "/audit_logs/events", numberMeta)
	require.Equal(t, 400, r.status, "%s", r.raw)
	assert.Equal(t, "/metadata/i", r.body["errors"].([]any)[0].(map[string]any)["instancePath"])
	require.Equal(t, 200, c.do("POST", "/audit_logs/events", eventBody("org_own", "doc.updated", at, map[string]any{"i": "x"})).status)
	r = c.do("POST", "/audit_logs/events", eventBody("org_env", "doc.updated", at, map[string]any{"i": 1}))
	require.Equal(t, 200, r.status, "other organizations keep the environment's schema: %s", r.raw)
	c.waitFor("org_own", 1)
	c.waitFor("org_env", 1)
	assert.Zero(t, streamMsgs(t, a, event.StreamRejected))
}

// pollExport polls GET /audit_logs/exports/{id} until it is no longer pending.
func (c *client) pollExport(id string) response {
	c.t.Helper()
	var r response
	require.Eventually(c.t, func() bool {
		r = c.do("GET", "/audit_logs/exports/"+id, nil)
		require.Equal(c.t, 200, r.status, "%s", r.raw)
		return r.body["state"] != "pending"
	}, 30*time.Second, 50*time.Millisecond)
	return r
}

// exportFile requests an export (body: the create-export request), waits until it is ready and
// downloads its file.
func (c *client) exportFile(body []byte) (*http.Response, []byte) {
	c.t.Helper()
	r := c.do("POST", "/audit_logs/exports", body)
	require.Equal(c.t, 201, r.status, "%s", r.raw)
	r = c.pollExport(r.body["id"].(string))
	require.Equal(c.t, "ready", r.body["state"], "%s", r.raw)
	res, data := download(c.t, r.body["url"].(string))
	require.Equal(c.t, 200, res.StatusCode, "%s", data)
	return res, data
}

func download(t *testing.T, link string) (*http.Response, []byte) {
	t.Helper()
	res, err := http.Get(link) // no API key
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, b
}

// A download declares its length: a file cut off mid-way (the object store stalled, the process
// died) is then a broken response to the client, never a clean end of a shorter CSV (make bench's
// 10M export was cut at row 2,448,011 and ended as a 200 with a complete-looking body).
func TestExportDownloadDeclaresItsLength(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	meta := map[string]any{}
	for i := range 20 {
		meta[fmt.Sprintf("k%d", i)] = strings.Repeat("x", 400) // larger than net/http's unchunked buffer
	}
	b, _ := json.Marshal(map[string]any{"organization_id": "org_x", "event": map[string]any{
		"action": "user.signed_in", "occurred_at": at.Format(time.RFC3339Nano),
		"actor": map[string]any{"id": "user_1", "type": "user"}, "targets": []any{},
		"context": map[string]any{"location": "1.2.3.4"}, "metadata": meta}})
	require.Equal(t, 200, c.do("POST", "/audit_logs/events", b).status)
	c.waitFor("org_x", 1)
	body, _ := json.Marshal(map[string]any{"organization_id": "org_x",
		"range_start": at.Add(-time.Minute).Format(time.RFC3339Nano), "range_end": time.Now().UTC().Format(time.RFC3339Nano)})
	res, csvBytes := c.exportFile(body)
	require.Greater(t, len(csvBytes), 8000)
	assert.Equal(t, int64(len(csvBytes)), res.ContentLength)
}

func TestExportToCSV(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	base := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Millisecond)
	post := func(org, action, actorName string, minute int, meta map[string]any) {
		b, _ := json.Marshal(map[string]any{"organization_id": org, "event": map[string]any{
			"action": action, "occurred_at": base.Add(time.Duration(minute) * time.Minute).Format(time.RFC3339Nano),
			"actor":   map[string]any{"id": "user_" + actorName, "type": "user", "name": actorName},
			"targets": []any{map[string]any{"id": "doc_1", "type": "document"}},
			"context": map[string]any{"location": "1.2.3.4"}, "metadata": meta}})
		r := c.do("POST", "/audit_logs/events", b)
		require.Equal(t, 200, r.status, "%s", r.raw)
	}
	post("org_x", "user.signed_in", "Ada", 0, map[string]any{"note": "=HYPERLINK(\"http://evil\")"})
	post("org_x", "user.signed_in", "@Bob", 1, map[string]any{"note": "+1, \"quoted\"; semi"})
	post("org_x", "doc.deleted", "Ada", 2, nil)
	post("org_y", "user.signed_in", "Ada", 0, nil)
	c.waitFor("org_x", 3)
	c.waitFor("org_y", 1)

	body, _ := json.Marshal(map[string]any{"organization_id": "org_x", "actions": []string{"user.signed_in"},
		"range_start": base.Add(-time.Minute).Format(time.RFC3339Nano), "range_end": time.Now().UTC().Format(time.RFC3339Nano)})
	r := c.do("POST", "/audit_logs/exports", body)
	require.Equal(t, 201, r.status, "%s", r.raw)
	assert.Equal(t, "audit_log_export", r.body["object"])
	assert.Equal(t, "pending", r.body["state"])
	assert.NotContains(t, r.body, "url")
	id := r.body["id"].(string)
	assert.Regexp(t, `^audit_log_export_[0-9A-Z]{26}$`, id)

	r = c.pollExport(id)
	require.Equal(t, "ready", r.body["state"], "%s", r.raw)
	link := r.body["url"].(string)
	res, csvBytes := download(t, link)
	require.Equal(t, 200, res.StatusCode, "%s", csvBytes)
	assert.Equal(t, "text/csv; charset=utf-8", res.Header.Get("Content-Type"))
	assert.Contains(t, res.Header.Get("Content-Disposition"), "attachment")
	rows, err := csv.NewReader(bytes.NewReader(csvBytes)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3, "header and the two user.signed_in events of org_x: %s", csvBytes)
	assert.Equal(t, "id", rows[0][0])
	col := func(name string) int {
		for i, h := range rows[0] {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %s", name)
		return -1
	}
	assert.Equal(t, "Ada", rows[1][col("actor_name")], "oldest first")
	assert.Equal(t, "'@Bob", rows[2][col("actor_name")], "a formula cell is neutralised")
	assert.Equal(t, "org_x", rows[1][col("organization_id")])
	assert.Equal(t, event.FormatTime(base), rows[1][col("occurred_at")])
	assert.Contains(t, rows[1][col("metadata")], "HYPERLINK", "JSON cells start with {")
	assert.Equal(t, `[{"id":"doc_1","type":"document"}]`, rows[1][col("targets")])

	// A fresh link on every GET; a tampered or expired link is refused.
	r2 := c.do("GET", "/audit_logs/exports/"+id, nil)
	assert.Equal(t, "ready", r2.body["state"])
	u, err := url.Parse(link)
	require.NoError(t, err)
	q := u.Query()
	q.Set("expires", fmt.Sprint(time.Now().Add(time.Hour).Unix()))
	u.RawQuery = q.Encode()
	res, b := download(t, u.String())
	assert.Equal(t, 403, res.StatusCode, "%s", b)
	q.Set("expires", fmt.Sprint(time.Now().Add(-time.Minute).Unix()))
	q.Set("signature", a.exportSignature(t, id, q.Get("expires")))
	u.RawQuery = q.Encode()
	res, b = download(t, u.String())
	assert.Equal(t, 403, res.StatusCode, "an expired link: %s", b)
	assert.Contains(t, string(b), "link_expired")
	res, _ = download(t, strings.Replace(link, id, "audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FAV", 1))
	assert.Equal(t, 403, res.StatusCode, "a link names one export")

	// Filters: deprecated actors = actor_names; targets are target types.
	body, _ = json.Marshal(map[string]any{"organization_id": "org_x", "actors": []string{"Ada"}, "targets": []string{"document"},
		"range_start": base.Add(-time.Minute).Format(time.RFC3339), "range_end": time.Now().UTC().Format(time.RFC3339)})
	_, csvBytes = c.exportFile(body)
	rows, err = csv.NewReader(bytes.NewReader(csvBytes)).ReadAll()
	require.NoError(t, err)
	assert.Len(t, rows, 3, "Ada's two events: %s", csvBytes)

	assert.Equal(t, 404, c.do("GET", "/audit_logs/exports/audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FAV", nil).status)
}

// exportSignature signs a link as the server would (to test expiry without waiting 10 minutes).
func (a *App) exportSignature(t *testing.T, id, expires string) string {
	t.Helper()
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), event.BucketSecrets)
	require.NoError(t, err)
	e, err := kv.Get(context.Background(), "export-link-signing-key")
	require.NoError(t, err)
	return signLink(t, string(e.Value()), id, expires)
}

func TestRetentionGovernsWhatIsKept(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	r := c.do("GET", "/organizations/org_fresh/audit_logs_retention", nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, `{"retention_period_in_days":null}`, strings.TrimSpace(string(r.raw)), "a never-seen organization exists, with no retention")

	now := time.Now().UTC()
	for i, age := range []int{1, 20, 45, 90} {
		c.emit("org_ret", now.Add(-time.Duration(age)*24*time.Hour), i)
	}
	c.waitFor("org_ret", 4)

	r = c.do("PUT", "/organizations/org_ret/audit_logs_retention", []byte(`{"retention_period":"2_MONTHS"}`))
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, float64(60), r.body["retention_period_in_days"])
	assert.Equal(t, 3, len(c.list("organization_id=org_ret&limit=100").body["data"].([]any)))
	assert.Equal(t, uint64(3), storedCount(t, a, "org_ret"), "shortening deletes what is no longer kept")

	r = c.do("PUT", "/organizations/org_ret/audit_logs_retention", []byte(`{"retention_period_in_days":30}`))
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, float64(30), c.do("GET", "/organizations/org_ret/audit_logs_retention", nil).body["retention_period_in_days"])
	assert.Equal(t, 2, len(c.list("organization_id=org_ret&limit=100").body["data"].([]any)))
	assert.Equal(t, uint64(2), storedCount(t, a, "org_ret"))

	// New events are stamped with the current retention.
	c.emit("org_ret", now.Add(-time.Hour), 9)
	c.waitFor("org_ret", 3)
	cfg := c.do("GET", "/organizations/org_ret/audit_log_configuration", nil)
	require.Equal(t, 200, cfg.status, "%s", cfg.raw)
	assert.Equal(t, map[string]any{"organization_id": "org_ret", "retention_period_in_days": float64(30), "state": "active"}, cfg.body)
}

func TestRateLimitPerKeyOverHTTP(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_RATE_LIMIT": "1", "LOGBOOK_RATE_BURST": "3"})
	c := a.client(t, testKey)
	for i := 0; i < 3; i++ {
		require.Equal(t, 200, c.do("GET", "/audit_logs/actions", nil).status)
	}
	r := c.do("GET", "/audit_logs/actions", nil)
	require.Equal(t, 429, r.status, "%s", r.raw)
	assert.Equal(t, "rate_limit_exceeded", r.body["code"])
	assert.Equal(t, "1", r.header.Get("Retry-After"))
}

func signLink(t *testing.T, hexKey, id, expires string) string {
	t.Helper()
	key, err := hex.DecodeString(hexKey)
	require.NoError(t, err)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("logbook export link\n" + id + "\n" + expires))
	return hex.EncodeToString(m.Sum(nil))
}
