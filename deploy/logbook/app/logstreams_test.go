package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A log stream made through the API delivers an organization's events, signed, to an HTTP
// endpoint; reads never show a secret; pause holds delivery and resume catches up; the changes are
// on record in org_logbook; delete removes the stream's consumer.
func TestLogStreamEndToEnd(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	var mu sync.Mutex
	var got []string
	var wh *standardwebhooks.Webhook
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if wh == nil || wh.Verify(body, r.Header) != nil || r.Header.Get("X-Token") != "t0ken" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var evs []struct{ ID, Organization_ID string }
		require.NoError(t, json.Unmarshal(body, &evs))
		for _, e := range evs {
			got = append(got, e.Organization_ID)
		}
	}))
	defer recv.Close()
	received := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	r := c.do("POST", "/log_streams", []byte(fmt.Sprintf(`{"organization_id":"org_ls","name":"SIEM",
		"destination":{"type":"http","url":%q,"headers":{"X-Token":"t0ken"}},"batch":{"max_events":10,"linger_ms":20}}`, recv.URL)))
	require.Equal(t, 201, r.status, "%s", r.raw)
	secret, _ := r.body["signing_secret"].(string)
	require.NotEmpty(t, secret, "a generated signing secret is shown once")
	mu.Lock()
	wh, _ = standardwebhooks.NewWebhook(secret)
	mu.Unlock()
	id := r.body["id"].(string)

	base := time.Now().Add(-time.Hour)
	for i := range 25 {
		c.emit("org_ls", base, i)
		c.emit("org_other", base, i)
	}
	require.Eventually(t, func() bool { return received() == 25 }, 30*time.Second, 20*time.Millisecond)
	mu.Lock()
	for _, org := range got {
		assert.Equal(t, "org_ls", org)
	}
	mu.Unlock()

	var g response
	require.Eventually(t, func() bool {
		g = c.do("GET", "/log_streams/"+id, nil)
		return g.status == 200 && g.body["delivered"] == float64(25)
	}, 10*time.Second, 20*time.Millisecond, "the status shows the deliveries")
	assert.NotContains(t, string(g.raw), secret)
	assert.NotContains(t, string(g.raw), "t0ken")
	assert.Equal(t, "ok", g.body["health"])
	dest := g.body["destination"].(map[string]any)
	assert.Equal(t, []any{"X-Token"}, dest["header_names"])

	require.Equal(t, 200, c.do("POST", "/log_streams/"+id+"/pause", nil).status)
	require.Eventually(t, func() bool { return c.do("GET", "/log_streams/"+id, nil).body["paused"] == true },
		10*time.Second, 20*time.Millisecond, "the worker sees the pause")
	for i := range 5 {
		c.emit("org_ls", base, 100+i)
	}
	require.Eventually(t, func() bool {
		l := c.do("GET", "/log_streams/"+id, nil).body["lag"].(map[string]any)
		return l["events"] == float64(5)
	}, 10*time.Second, 20*time.Millisecond, "a paused stream's lag grows")
	assert.Equal(t, 25, received())
	require.Equal(t, 200, c.do("POST", "/log_streams/"+id+"/resume", nil).status)
	require.Eventually(t, func() bool { return received() == 30 }, 30*time.Second, 20*time.Millisecond)

	m := scrape(t, a)
	assert.Contains(t, m, `logstream_delivered_events_total{log_stream="`+id+`"}`)
	assert.Contains(t, m, `logstream_lag_seconds{log_stream="`+id+`"}`)
	assert.Contains(t, m, `logstream_failing{log_stream="`+id+`"} 0`)

	// The organization's viewer link shows the stream read-only (no address, no secret); another
	// organization's link does not.
	viewer := func(org string) response {
		link := c.do("POST", "/portal/links", []byte(`{"organization_id":"`+org+`"}`))
		require.Equal(t, 201, link.status)
		u, err := url.Parse(link.body["url"].(string))
		require.NoError(t, err)
		return (&client{t: t, base: c.base, key: u.Query().Get("token")}).do("GET", "/portal/api/log_streams", nil)
	}
	v := viewer("org_ls")
	require.Equal(t, 200, v.status, "%s", v.raw)
	require.Len(t, v.body["data"], 1)
	vs := v.body["data"].([]any)[0].(map[string]any)
	assert.Equal(t, "SIEM", vs["name"])
	assert.Equal(t, "http", vs["type"])
	assert.Equal(t, "ok", vs["health"])
	assert.NotContains(t, string(v.raw), recv.URL)
	assert.NotContains(t, string(v.raw), "t0ken")
	assert.Empty(t, viewer("org_other").body["data"])

	l := c.do("GET", "/log_streams?organization_id=org_ls", nil)
	require.Equal(t, 200, l.status)
	require.Len(t, l.body["data"], 1)

	require.Equal(t, 200, c.do("DELETE", "/log_streams/"+id, nil).status)
	require.Equal(t, 404, c.do("GET", "/log_streams/"+id, nil).status)
	require.Eventually(t, func() bool {
		return !strings.Contains(scrape(t, a), id)
	}, 10*time.Second, 20*time.Millisecond, "a deleted stream leaves /metrics")

	// Every change is on record in Logbook's own organization.
	actions := c.waitForActions("org_logbook", "logbook.log_stream.", 4)
	assert.ElementsMatch(t, []string{"logbook.log_stream.created", "logbook.log_stream.paused",
		"logbook.log_stream.resumed", "logbook.log_stream.deleted"}, actions)
}

func scrape(t *testing.T, a *App) string {
	res, err := http.Get("http://" + a.Addr + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

// An alert rule made through the API fires on the fifth failed login by one actor within a minute,
// delivers the firing to a signed webhook, lists it, and both the rule's creation and the firing
// are on record in org_logbook.
func TestAlertRuleEndToEnd(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	var mu sync.Mutex
	var firings []map[string]any
	var wh *standardwebhooks.Webhook
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if wh == nil || wh.Verify(body, r.Header) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var f map[string]any
		require.NoError(t, json.Unmarshal(body, &f))
		firings = append(firings, f)
	}))
	defer recv.Close()
	r := c.do("POST", "/alert_rules", []byte(fmt.Sprintf(`{"organization_id":"org_al","name":"Brute force",
		"match":{"actions":["user.login_failed"]},"threshold":{"count":5,"window_seconds":60,"group_by":"actor"},
		"cooldown_seconds":600,"destination":{"type":"webhook","url":%q}}`, recv.URL)))
	require.Equal(t, 201, r.status, "%s", r.raw)
	secret := r.body["signing_secret"].(string)
	mu.Lock()
	wh, _ = standardwebhooks.NewWebhook(secret)
	mu.Unlock()
	id := r.body["id"].(string)
	g := c.do("GET", "/alert_rules/"+id, nil)
	assert.NotContains(t, string(g.raw), secret)

	for i := range 5 {
		b := eventBody("org_al", "user.login_failed", time.Now(), map[string]any{"i": i})
		require.Equal(t, 200, c.do("POST", "/audit_logs/events", b).status)
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(firings) == 1 }, 30*time.Second, 20*time.Millisecond)
	mu.Lock()
	assert.Equal(t, id, firings[0]["rule_id"])
	assert.Equal(t, "user:user_1", firings[0]["group"])
	assert.Len(t, firings[0]["event_ids"], 5)
	mu.Unlock()
	require.Eventually(t, func() bool {
		l := c.do("GET", "/alert_rules/"+id+"/firings", nil)
		data, _ := l.body["data"].([]any)
		return len(data) == 1 && data[0].(map[string]any)["delivered_at"] != nil
	}, 10*time.Second, 20*time.Millisecond)
	actions := c.waitForActions("org_logbook", "logbook.alert", 2)
	assert.ElementsMatch(t, []string{"logbook.alert_rule.created", "logbook.alert.fired"}, actions)
}

// The log stream and alert rule APIs refuse what they cannot do, naming the fields, and changes
// keep secrets not sent again.
func TestLogStreamAndRuleRefusals(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	fields := func(r response) []string {
		var out []string
		errs, _ := r.body["errors"].([]any)
		for _, e := range errs {
			out = append(out, e.(map[string]any)["field"].(string))
		}
		return out
	}
	r := c.do("POST", "/log_streams", []byte(`{"name":"x","destination":{"type":"splunk","url":"ftp://x"}}`))
	require.Equal(t, 422, r.status, "%s", r.raw)
	assert.ElementsMatch(t, []string{"destination.url", "destination.token"}, fields(r))
	r = c.do("POST", "/log_streams", []byte(`{"name":"x","destination":{"type":"http","url":"http://x"},"extra":1}`))
	assert.Equal(t, 400, r.status)
	assert.Equal(t, 404, c.do("GET", "/log_streams/log_stream_nope", nil).status)
	assert.Equal(t, 401, (&client{t: t, base: c.base}).do("GET", "/log_streams", nil).status)

	r = c.do("POST", "/log_streams", []byte(`{"organization_id":"org_s","name":"splunk","destination":{"type":"splunk","url":"https://s:8088","token":"tok-1"}}`))
	require.Equal(t, 201, r.status, "%s", r.raw)
	id := r.body["id"].(string)
	assert.NotContains(t, string(r.raw), "tok-1")
	assert.Nil(t, r.body["signing_secret"])
	r = c.do("PATCH", "/log_streams/"+id, []byte(`{"destination":{"type":"splunk","url":"https://s2:8088","index":"audit"}}`))
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, "https://s2:8088", r.body["destination"].(map[string]any)["url"])
	r = c.do("PATCH", "/log_streams/"+id, []byte(`{"destination":{"type":"datadog","site":"datadoghq.eu"}}`))
	assert.Equal(t, 422, r.status, "a new type needs its own secrets")
	assert.Equal(t, []string{"destination.api_key"}, fields(r))
	r = c.do("POST", "/log_streams/"+id+"/replay", []byte(`{"from":"2999-01-01T00:00:00Z"}`))
	assert.Equal(t, 422, r.status)
	r = c.do("POST", "/log_streams/"+id+"/replay", []byte(`{"from":"2026-01-01T00:00:00Z"}`))
	assert.Equal(t, 202, r.status)

	r = c.do("POST", "/alert_rules", []byte(`{"organization_id":"org_logbook","name":"x","match":{},
		"threshold":{"count":1,"window_seconds":0,"group_by":"team"},"destination":{"type":"log_stream","log_stream_id":"log_stream_nope"}}`))
	require.Equal(t, 422, r.status, "%s", r.raw)
	assert.ElementsMatch(t, []string{"organization_id", "match", "threshold.count", "threshold.window_seconds", "threshold.group_by"}, fields(r))
	r = c.do("POST", "/alert_rules", []byte(`{"organization_id":"org_s","name":"x","match":{"actions":["a.*"]},
		"destination":{"type":"log_stream","log_stream_id":"log_stream_nope"}}`))
	require.Equal(t, 422, r.status, "%s", r.raw)
	assert.Equal(t, []string{"destination.log_stream_id"}, fields(r))
	r = c.do("POST", "/alert_rules", []byte(`{"organization_id":"org_s","name":"x","match":{"actions":["a.*"]},
		"destination":{"type":"log_stream","log_stream_id":"`+id+`"}}`))
	require.Equal(t, 201, r.status, "%s", r.raw)
	rule := r.body["id"].(string)
	r = c.do("PATCH", "/alert_rules/"+rule, []byte(`{"organization_id":"org_t"}`))
	assert.Equal(t, 422, r.status)
	r = c.do("PATCH", "/alert_rules/"+rule, []byte(`{"state":"paused","cooldown_seconds":60}`))
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, "paused", r.body["state"])
	assert.EqualValues(t, 60, r.body["cooldown_seconds"])
	assert.Equal(t, 200, c.do("DELETE", "/alert_rules/"+rule, nil).status)
	assert.Equal(t, 404, c.do("GET", "/alert_rules/"+rule, nil).status)
}
