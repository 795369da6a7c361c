package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

const testKey = "sk_test_0123456789abcdef0123456789"

// start runs a real single-process Logbook (embedded NATS with JetStream on disk, embedded
// ClickHouse) on dir, on a free loopback port.
func start(t *testing.T, dir, key string) *App {
	t.Helper()
	cfg := ConfigFromEnv(config.FromMap(map[string]string{
		"LOGBOOK_DATA_DIR":   dir,
		"LOGBOOK_ADDR":       "127.0.0.1:0",
		"LOGBOOK_API_KEY":    key,
		"LOGBOOK_BATCH_WAIT": "50ms",
	}))
	cfg.StopMerges = true // every stored row stays visible to storedCount and storetest.Copies
	a, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return a
}

func startT(t *testing.T) *App {
	a := start(t, t.TempDir(), testKey)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a
}

type client struct {
	t    *testing.T
	base string
	key  string
}

func (a *App) client(t *testing.T, key string) *client {
	return &client{t: t, base: "http://" + a.Addr, key: key}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (c *client) do(method, path string, body []byte, headers ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		require.NoError(c.t, json.Unmarshal(raw, &r.body), "every body is JSON: %s", raw)
	}
	require.Contains(c.t, res.Header.Get("Content-Type"), "application/json")
	require.NotEmpty(c.t, res.Header.Get("X-Request-ID"))
	return r
}

func eventBody(org, action string, at time.Time, meta map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"organization_id": org,
		"event": map[string]any{
			"action":      action,
			"occurred_at": at.UTC().Format(time.RFC3339Nano),
			"actor":       map[string]any{"id": "user_1", "type": "user", "name": "Jon Smith"},
			"targets":     []any{map[string]any{"id": "team_1", "type": "team"}},
			"context":     map[string]any{"location": "123.123.123.123", "user_agent": "Chrome/104.0.0.0"},
			"metadata":    meta,
		},
	})
	return b
}

func (c *client) emit(org string, at time.Time, i int, headers ...string) {
	c.t.Helper()
	r := c.do("POST", "/audit_logs/events", eventBody(org, "user.signed_in", at, map[string]any{"i": i}), headers...)
	require.Equal(c.t, 200, r.status, "%s", r.raw)
	require.Equal(c.t, true, r.body["success"])
}

func (c *client) list(query string) response {
	c.t.Helper()
	return c.do("GET", "/audit_logs/events?"+query, nil)
}

// waitFor polls the query API until org has n events stored.
func (c *client) waitFor(org string, n int) []any {
	c.t.Helper()
	var data []any
	require.Eventually(c.t, func() bool {
		r := c.list("organization_id=" + org + "&limit=1000")
		data, _ = r.body["data"].([]any)
		return len(data) >= n
	}, 20*time.Second, 20*time.Millisecond, "events never became visible")
	require.Len(c.t, data, n)
	return data
}

// waitForActions waits until org (Logbook's own org_logbook) holds exactly want among its events
// whose action starts with prefix, and returns those actions: other records (the start-up's key,
// viewer links) are left out.
func (c *client) waitForActions(org, prefix string, want int) []string {
	c.t.Helper()
	var actions []string
	require.Eventually(c.t, func() bool {
		r := c.list("organization_id=" + org + "&limit=1000")
		data, _ := r.body["data"].([]any)
		actions = actions[:0]
		for _, d := range data {
			if a, _ := d.(map[string]any)["action"].(string); strings.HasPrefix(a, prefix) {
				actions = append(actions, a)
			}
		}
		return len(actions) >= want
	}, 20*time.Second, 20*time.Millisecond, "records never became visible")
	require.Len(c.t, actions, want)
	return actions
}

func TestEmitAndList(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	base := time.Date(2026, 2, 2, 16, 35, 39, 317_000_000, time.UTC)
	for i := 0; i < 5; i++ {
		c.emit("org_a", base.Add(time.Duration(i)*time.Minute), i)
	}
	c.emit("org_b", base, 99)

	data := c.waitFor("org_a", 5)
	first := data[0].(map[string]any)
	assert.Equal(t, "audit_log_event", first["object"])
	assert.Equal(t, "org_a", first["organization_id"])
	assert.Equal(t, "user.signed_in", first["action"])
	assert.Equal(t, "2026-02-02T16:39:39.317Z", first["occurred_at"], "newest first, three fractional digits")
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, first["created_at"])
	assert.Len(t, first["id"], 26, "a ULID")
	assert.Equal(t, map[string]any{"i": float64(4)}, first["metadata"])
	assert.Equal(t, map[string]any{"location": "123.123.123.123", "user_agent": "Chrome/104.0.0.0"}, first["context"])
	for _, d := range data {
		assert.Equal(t, "org_a", d.(map[string]any)["organization_id"], "one organization never sees another's events")
	}
	b := c.waitFor("org_b", 1)
	assert.Equal(t, "org_b", b[0].(map[string]any)["organization_id"])
}

func TestPagingIsCompleteInBothDirections(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 25; i++ {
		c.emit("org_p", base.Add(time.Duration(i/3)*time.Hour), i) // groups of three share a time
	}
	all := c.waitFor("org_p", 25)
	ids := func(data []any) []string {
		var out []string
		for _, d := range data {
			out = append(out, d.(map[string]any)["id"].(string))
		}
		return out
	}
	want := ids(all)

	// Forward with "after" until the last page says after: null.
	var got []string
	var pages []response
	q := "organization_id=org_p&limit=10"
	for {
		r := c.list(q)
		require.Equal(t, 200, r.status, "%s", r.raw)
		pages = append(pages, r)
		got = append(got, ids(r.body["data"].([]any))...)
		meta := r.body["list_metadata"].(map[string]any)
		if meta["after"] == nil {
			break
		}
		q = "organization_id=org_p&limit=10&after=" + url.QueryEscape(meta["after"].(string))
		require.Less(t, len(pages), 10, "paging never ended")
	}
	assert.Equal(t, want, got)
	require.Len(t, pages, 3)
	assert.Nil(t, pages[0].body["list_metadata"].(map[string]any)["before"], "the first page has nothing before it")

	// Back from the last page with "before" until before: null.
	var back []string
	before := pages[2].body["list_metadata"].(map[string]any)["before"]
	for before != nil {
		r := c.list("organization_id=org_p&limit=10&before=" + url.QueryEscape(before.(string)))
		require.Equal(t, 200, r.status, "%s", r.raw)
		back = append(ids(r.body["data"].([]any)), back...)
		before = r.body["list_metadata"].(map[string]any)["before"]
	}
	assert.Equal(t, want[:20], back)

	// Oldest first.
	r := c.list("organization_id=org_p&limit=100&order=asc")
	asc := ids(r.body["data"].([]any))
	require.Len(t, asc, 25)
	for i := range asc {
		assert.Equal(t, want[24-i], asc[i])
	}

	// Events arriving while paging are never shown twice nor cause a skip.
	r1 := c.list("organization_id=org_p&limit=10")
	c.emit("org_p", base.Add(100*time.Hour), 100) // newer than everything
	c.emit("org_p", base.Add(-time.Hour), 101)    // older than everything
	c.waitFor("org_p", 27)
	seen := ids(r1.body["data"].([]any))
	after := r1.body["list_metadata"].(map[string]any)["after"]
	for after != nil {
		r := c.list("organization_id=org_p&limit=10&after=" + url.QueryEscape(after.(string)))
		seen = append(seen, ids(r.body["data"].([]any))...)
		after = r.body["list_metadata"].(map[string]any)["after"]
	}
	require.Len(t, seen, 26, "the 25 old events plus the one older than all of them, none twice")
	assert.Equal(t, want, seen[:25])
}

func TestIdempotencyKeyStoresOnce(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	at := time.Date(2026, 3, 3, 3, 3, 3, 0, time.UTC)
	c.emit("org_i", at, 1, "Idempotency-Key", "retry-key-1")
	c.emit("org_i", at, 1, "Idempotency-Key", "retry-key-1")
	c.emit("org_i", at, 2, "Idempotency-Key", "retry-key-2")
	c.waitFor("org_i", 2)
	// The writer has had time to store a third row if there were one.
	time.Sleep(300 * time.Millisecond)
	c.waitFor("org_i", 2)
}

func TestSchemaValidationInTheResponse(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	r := c.do("POST", "/audit_logs/actions/user.signed_in/schemas", []byte(`{
	  "actor":{"metadata":{"type":"object","properties":{"role":{"type":"string"}}}},
	  "targets":[{"type":"team"}],
	  "metadata":{"type":"object","properties":{"i":{"type":"string"}}}}`))
	require.Equal(t, 201, r.status, "%s", r.raw)
	assert.Equal(t, "audit_log_schema", r.body["object"])
	assert.Equal(t, float64(1), r.body["version"])
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, r.body["created_at"])

	at := time.Now().Add(-time.Minute)
	bad := c.do("POST", "/audit_logs/events", eventBody("org_s", "user.signed_in", at, map[string]any{"i": 5}))
	require.Equal(t, 400, bad.status, "%s", bad.raw)
	assert.Equal(t, "invalid_audit_log_event", bad.body["code"])
	errs := bad.body["errors"].([]any)
	require.NotEmpty(t, errs)
	assert.Equal(t, "/metadata/i", errs[0].(map[string]any)["instancePath"])

	good := c.do("POST", "/audit_logs/events", eventBody("org_s", "user.signed_in", at, map[string]any{"i": "five"}))
	require.Equal(t, 200, good.status, "%s", good.raw)
	c.waitFor("org_s", 1)
}

func streamMsgs(t *testing.T, a *App, name string) uint64 {
	t.Helper()
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), name)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// Bad input gets the right status, the WorkOS envelope, and publishes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	at := time.Now().Add(-time.Minute)
	valid := eventBody("org_x", "user.signed_in", at, nil)
	huge := eventBody("org_x", "user.signed_in", at, map[string]any{"pad": strings.Repeat("x", 300<<10)})
	tests := []struct {
		name   string
		key    string
		body   []byte
		status int
		code   string
	}{
		{"no key", "", valid, 401, "unauthorized"},
		{"wrong key", "sk_wrong_0123456789abcdef", valid, 401, "unauthorized"},
		{"malformed JSON", testKey, []byte(`{"organization_id":`), 400, "invalid_request_body"},
		{"not an object", testKey, []byte(`[1,2]`), 400, "invalid_request_body"},
		{"missing fields", testKey, []byte(`{"organization_id":"org_x","event":{}}`), 422, "unprocessable_entity"},
		{"wrong types", testKey, []byte(`{"organization_id":"org_x","event":{"action":1,"occurred_at":true,"actor":[],"targets":{},"context":"x"}}`), 422, "unprocessable_entity"},
		{"subject injection in org", testKey, eventBody("org.*.>", "user.signed_in", at, nil), 422, "unprocessable_entity"},
		{"org with a space", testKey, eventBody("org x", "user.signed_in", at, nil), 422, "unprocessable_entity"},
		{"oversized body", testKey, huge, 413, "payload_too_large"},
	}
	before := streamMsgs(t, a, event.StreamRaw)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.client(t, tt.key).do("POST", "/audit_logs/events", tt.body)
			assert.Equal(t, tt.status, r.status, "%s", r.raw)
			assert.Equal(t, tt.code, r.body["code"])
			assert.NotEmpty(t, r.body["message"])
			if tt.status == 400 {
				assert.Contains(t, r.body, "errors", "a 400 carries code and errors, or Node raises a generic error")
			}
			if tt.status == 422 {
				errs, _ := r.body["errors"].([]any)
				require.NotEmpty(t, errs)
				e := errs[0].(map[string]any)
				assert.NotEmpty(t, e["field"])
				assert.NotEmpty(t, e["code"])
			}
		})
	}
	assert.Equal(t, before, streamMsgs(t, a, event.StreamRaw), "bad input must publish nothing")
	assert.Equal(t, 404, c.do("GET", "/no/such/path", nil).status)
}

func TestBadListQueries(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	c.emit("org_q", time.Now().Add(-time.Hour), 1)
	c.emit("org_q", time.Now().Add(-time.Hour), 2)
	c.emit("org_other", time.Now().Add(-time.Hour), 3)
	c.emit("org_other", time.Now().Add(-time.Hour), 4)
	c.waitFor("org_q", 2)
	c.waitFor("org_other", 2)
	other := c.list("organization_id=org_other&limit=1")
	foreign := other.body["list_metadata"].(map[string]any)["after"].(string)

	for name, q := range map[string]string{
		"missing org":          "limit=10",
		"org with odd chars":   "organization_id=org%27%20OR%201%3D1",
		"unknown parameter":    "organization_id=org_q&colour=red",
		"limit zero":           "organization_id=org_q&limit=0",
		"absurd limit":         "organization_id=org_q&limit=1000000",
		"limit not a number":   "organization_id=org_q&limit=ten",
		"bad order":            "organization_id=org_q&order=sideways",
		"garbage cursor":       "organization_id=org_q&after=%21%21%21",
		"another org's cursor": "organization_id=org_q&after=" + url.QueryEscape(foreign),
		"before and after":     "organization_id=org_q&after=" + url.QueryEscape(foreign) + "&before=" + url.QueryEscape(foreign),
		"repeated org":         "organization_id=org_q&organization_id=org_other",
	} {
		t.Run(name, func(t *testing.T) {
			r := c.list(q)
			assert.Equal(t, 400, r.status, "%s", r.raw)
			assert.Equal(t, "invalid_query_parameter", r.body["code"])
			assert.NotEmpty(t, r.body["errors"])
		})
	}
	assert.Equal(t, 401, a.client(t, "").list("organization_id=org_q").status)
}

// Data survives a restart, and a generated key is shown once and keeps working.
func TestRestartKeepsDataAndKey(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, "")
	key := a.GeneratedKey
	require.True(t, strings.HasPrefix(key, "sk_"), "a key is generated on first start")
	c := a.client(t, key)
	for i := 0; i < 3; i++ {
		c.emit("org_r", time.Date(2026, 4, 4, 4, 4, i, 0, time.UTC), i)
	}
	c.waitFor("org_r", 3)
	require.NoError(t, a.Close())

	b := start(t, dir, "")
	defer func() { require.NoError(t, b.Close()) }()
	assert.Empty(t, b.GeneratedKey, "the key is shown only once")
	c = b.client(t, key)
	data := c.waitFor("org_r", 3)
	assert.Equal(t, "2026-04-04T04:04:02.000Z", data[0].(map[string]any)["occurred_at"])
	c.emit("org_r", time.Date(2026, 4, 4, 4, 4, 9, 0, time.UTC), 9)
	c.waitFor("org_r", 4)
	assert.Equal(t, 401, b.client(t, "sk_not_the_key_0123456789").list("organization_id=org_r").status)
}

func TestSearchFiltersAndGetOverHTTP(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	at := time.Date(2026, 8, 1, 10, 0, 0, 0, time.UTC)
	post := func(action, actor string, minute int, meta map[string]any) {
		b, _ := json.Marshal(map[string]any{"organization_id": "org_f", "event": map[string]any{
			"action": action, "occurred_at": at.Add(time.Duration(minute) * time.Minute).Format(time.RFC3339),
			"actor":   map[string]any{"id": actor, "type": "user", "name": "Name " + actor},
			"targets": []any{map[string]any{"id": "inv_" + actor, "type": "invoice"}},
			"context": map[string]any{"location": "1.1.1.1"}, "metadata": meta}})
		r := c.do("POST", "/audit_logs/events", b)
		require.Equal(t, 200, r.status, "%s", r.raw)
	}
	post("user.signed_in", "u1", 0, map[string]any{"plan": "Enterprise"})
	post("user.signed_out", "u1", 1, nil)
	post("invoice.paid", "u2", 2, nil)
	post("user.signed_in", "u2", 3, nil)
	c.waitFor("org_f", 4)
	actions := func(q string) []string {
		r := c.list("organization_id=org_f&" + q)
		require.Equal(t, 200, r.status, "%s", r.raw)
		var out []string
		for _, d := range r.body["data"].([]any) {
			out = append(out, d.(map[string]any)["action"].(string)+"/"+d.(map[string]any)["actor"].(map[string]any)["id"].(string))
		}
		return out
	}
	assert.Equal(t, []string{"user.signed_in/u2", "user.signed_out/u1", "user.signed_in/u1"}, actions("actions=user.*"))
	assert.Equal(t, []string{"invoice.paid/u2", "user.signed_out/u1"}, actions("actions=invoice.paid&actions=user.signed_out"))
	assert.Equal(t, []string{"user.signed_in/u2", "invoice.paid/u2"}, actions("actor_ids=u2"))
	assert.Equal(t, []string{"user.signed_in/u1"}, actions("q=enterprise"))
	assert.Equal(t, []string{"invoice.paid/u2", "user.signed_out/u1"}, actions("range_start=2026-08-01T10:01:00Z&range_end=2026-08-01T10:03:00Z"))
	assert.Equal(t, []string{"user.signed_in/u2"}, actions("targets=invoice&target_ids=inv_u2&actor_names=Name+u2&actor_types=user&actions=user.signed_in"))

	// Paging with a filter keeps the filter.
	r := c.list("organization_id=org_f&actions=user.*&limit=2")
	after := r.body["list_metadata"].(map[string]any)["after"].(string)
	r2 := c.list("organization_id=org_f&actions=user.*&limit=2&after=" + url.QueryEscape(after))
	require.Equal(t, 200, r2.status, "%s", r2.raw)
	require.Len(t, r2.body["data"], 1)
	assert.Nil(t, r2.body["list_metadata"].(map[string]any)["after"])

	// One event by id, scoped to its organization.
	id := r.body["data"].([]any)[0].(map[string]any)["id"].(string)
	one := c.do("GET", "/audit_logs/events/"+id+"?organization_id=org_f", nil)
	require.Equal(t, 200, one.status, "%s", one.raw)
	assert.Equal(t, id, one.body["id"])
	assert.Equal(t, 404, c.do("GET", "/audit_logs/events/"+id+"?organization_id=org_other", nil).status)
	assert.Equal(t, 400, c.do("GET", "/audit_logs/events/"+id, nil).status)
}
