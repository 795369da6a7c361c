package app

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

// A preset key shorter than 32 characters stops the start with an error naming the variable, and
// the error does not repeat the key.
func TestShortPresetKeyIsRefusedAtStart(t *testing.T) {
	const short = "sk_only_twenty_chars"
	e := config.FromMap(map[string]string{"LOGBOOK_DATA_DIR": t.TempDir(), "LOGBOOK_API_KEY": short})
	_ = ConfigFromEnv(e)
	err := e.Err()
	require.Error(t, err, "a 20-character LOGBOOK_API_KEY must be refused")
	assert.Contains(t, err.Error(), "LOGBOOK_API_KEY")
	assert.Contains(t, err.Error(), "32")
	assert.NotContains(t, err.Error(), short, "the error must not print the key")
}

// apiKeyJSON is an api_key object as the admin routes answer it.
type apiKeyJSON struct {
	Object        string   `json:"object"`
	Name          string   `json:"name"`
	Prefix        string   `json:"prefix"`
	Scopes        []string `json:"scopes"`
	Organizations []string `json:"organizations"`
	Source        string   `json:"source"`
	CreatedAt     string   `json:"created_at"`
	LastUsedAt    *string  `json:"last_used_at"`
	Key           string   `json:"key"`
}

func (c *client) createKey(body string) apiKeyJSON {
	c.t.Helper()
	r := c.do("POST", "/admin/keys", []byte(body))
	require.Equal(c.t, 201, r.status, "%s", r.raw)
	var k apiKeyJSON
	require.NoError(c.t, json.Unmarshal(r.raw, &k))
	return k
}

func (c *client) listKeys() map[string]apiKeyJSON {
	c.t.Helper()
	r := c.do("GET", "/admin/keys", nil)
	require.Equal(c.t, 200, r.status, "%s", r.raw)
	var l struct {
		Object string       `json:"object"`
		Data   []apiKeyJSON `json:"data"`
	}
	require.NoError(c.t, json.Unmarshal(r.raw, &l))
	require.Equal(c.t, "list", l.Object)
	out := map[string]apiKeyJSON{}
	for _, k := range l.Data {
		assert.Empty(c.t, k.Key, "a listing never shows a key")
		out[k.Name] = k
	}
	return out
}

// Keys are created, listed and revoked through /admin/keys; a revoked key stops working at once;
// two keys overlap, so clients move from one to the other without downtime.
func TestKeyLifecycleOverHTTP(t *testing.T) {
	a := startT(t)
	admin := a.client(t, testKey)
	listed := admin.listKeys()
	require.Contains(t, listed, "env", "LOGBOOK_API_KEY is the key named env")
	assert.Equal(t, testKey[:7], listed["env"].Prefix)
	assert.Equal(t, "env", listed["env"].Source)

	ci := admin.createKey(`{"name":"ci"}`)
	assert.Equal(t, "api_key", ci.Object)
	assert.True(t, strings.HasPrefix(ci.Key, "sk_"), "the key is shown once, at creation")
	assert.Equal(t, ci.Key[:7], ci.Prefix)
	assert.Nil(t, ci.LastUsedAt)
	r := admin.do("POST", "/admin/keys", []byte(`{"name":"ci"}`))
	assert.Equal(t, 409, r.status, "names are unique: %s", r.raw)
	assert.Equal(t, "api_key_exists", r.body["code"])

	// Rotation: ci-2 overlaps ci; clients move; ci is revoked.
	ci2 := admin.createKey(`{"name":"ci-2"}`)
	old, next := a.client(t, ci.Key), a.client(t, ci2.Key)
	assert.Equal(t, 200, old.list("organization_id=org_k").status)
	assert.Equal(t, 200, next.list("organization_id=org_k").status)
	listed = admin.listKeys()
	assert.Contains(t, listed, "ci")
	assert.Contains(t, listed, "ci-2")

	r = admin.do("DELETE", "/admin/keys/ci", nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	assert.Equal(t, "ci", r.body["name"])
	assert.NotEmpty(t, r.body["revoked_at"])
	require.Eventually(t, func() bool { return old.list("organization_id=org_k").status == 401 },
		time.Second, 10*time.Millisecond, "a revoked key stops working within a second")
	assert.Equal(t, 200, next.list("organization_id=org_k").status, "the overlapping key keeps working")
	assert.NotContains(t, admin.listKeys(), "ci")
	assert.Equal(t, 404, admin.do("DELETE", "/admin/keys/ci", nil).status)

	for name, body := range map[string]string{
		"bad name":          `{"name":"has space"}`,
		"reserved name":     `{"name":"env"}`,
		"unknown scope":     `{"name":"x","scopes":["events:delete"]}`,
		"bad org":           `{"name":"x","organizations":["org.*"]}`,
		"reserved org":      `{"name":"x","organizations":["org_logbook"]}`,
		"admin for an org":  `{"name":"x","scopes":["admin"],"organizations":["org_a"]}`,
		"unknown field":     `{"name":"x","colour":"red"}`,
		"missing name":      `{"scopes":["events:read"]}`,
		"scopes not a list": `{"name":"x","scopes":"events:read"}`,
	} {
		t.Run(name, func(t *testing.T) {
			r := admin.do("POST", "/admin/keys", []byte(body))
			assert.Equal(t, 422, r.status, "%s", r.raw)
			assert.NotEmpty(t, r.body["errors"])
		})
	}
}

// Changing LOGBOOK_API_KEY between starts revokes the previous key; starting again with a revoked
// key is refused.
func TestChangingTheEnvKeyRevokesThePreviousOne(t *testing.T) {
	dir := t.TempDir()
	first := "sk_first_env_key_0123456789abcdefghij"
	second := "sk_second_env_key_0123456789abcdefghij"
	a := start(t, dir, first)
	require.Equal(t, 200, a.client(t, first).list("organization_id=org_e").status)
	require.NoError(t, a.Close())

	b := start(t, dir, second)
	assert.Equal(t, 401, b.client(t, first).list("organization_id=org_e").status, "the previous env key is revoked")
	assert.Equal(t, 200, b.client(t, second).list("organization_id=org_e").status)
	var revoked []any
	require.Eventually(t, func() bool {
		revoked, _ = b.client(t, second).list("organization_id=org_logbook&actions=logbook.api_key.revoked").body["data"].([]any)
		return len(revoked) == 1
	}, 20*time.Second, 50*time.Millisecond, "the start that replaced the env key recorded the revocation")
	ev := revoked[0].(map[string]any)
	assert.Equal(t, map[string]any{"id": "logbook", "type": "system", "name": "logbook"}, ev["actor"])
	assert.Equal(t, first[:7], ev["metadata"].(map[string]any)["key_prefix"])
	assert.Equal(t, "LOGBOOK_API_KEY changed", ev["metadata"].(map[string]any)["reason"])
	require.NoError(t, b.Close())

	cfg := ConfigFromEnv(config.FromMap(map[string]string{"LOGBOOK_DATA_DIR": dir, "LOGBOOK_ADDR": "127.0.0.1:0", "LOGBOOK_API_KEY": first}))
	c, err := Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		_ = c.Close()
	}
	require.Error(t, err, "a revoked key cannot come back through LOGBOOK_API_KEY")
	assert.Contains(t, err.Error(), "LOGBOOK_API_KEY")
}

// The generated first-start key is a named key like any other, and can be revoked.
func TestGeneratedKeyCanBeRevoked(t *testing.T) {
	a := start(t, t.TempDir(), "")
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	gen := a.client(t, a.GeneratedKey)
	listed := gen.listKeys()
	require.Contains(t, listed, "default")
	assert.Equal(t, "generated", listed["default"].Source)
	other := gen.createKey(`{"name":"ops"}`)
	ops := a.client(t, other.Key)
	require.Equal(t, 200, ops.do("DELETE", "/admin/keys/default", nil).status)
	require.Eventually(t, func() bool { return gen.list("organization_id=org_g").status == 401 },
		time.Second, 10*time.Millisecond)
}

// A key limited to organizations names only those; a read-only key cannot write; no key writes
// into the self-audit organization, and only full keys read it.
func TestScopedKeys(t *testing.T) {
	a := startT(t)
	admin := a.client(t, testKey)
	orgKey := a.client(t, admin.createKey(`{"name":"org-a","organizations":["org_a"]}`).Key)
	reader := a.client(t, admin.createKey(`{"name":"reader","scopes":["read"]}`).Key)
	writer := a.client(t, admin.createKey(`{"name":"writer","scopes":["events:write"]}`).Key)
	at := time.Now().Add(-time.Minute)
	rng := fmt.Sprintf(`"range_start":%q,"range_end":%q`, at.Add(-time.Hour).Format(time.RFC3339), time.Now().Add(time.Hour).Format(time.RFC3339))

	tests := []struct {
		name         string
		c            *client
		method, path string
		body         string
		status       int
		code         string
	}{
		{"org key emits for its org", orgKey, "POST", "/audit_logs/events", string(eventBody("org_a", "user.signed_in", at, nil)), 200, ""},
		{"org key emits for another org", orgKey, "POST", "/audit_logs/events", string(eventBody("org_b", "user.signed_in", at, nil)), 403, "organization_not_allowed"},
		{"org key lists its org", orgKey, "GET", "/audit_logs/events?organization_id=org_a", "", 200, ""},
		{"org key lists another org", orgKey, "GET", "/audit_logs/events?organization_id=org_b", "", 403, "organization_not_allowed"},
		{"org key gets another org's event", orgKey, "GET", "/audit_logs/events/01ARZ3NDEKTSV4RRFFQ69G5FAV?organization_id=org_b", "", 403, "organization_not_allowed"},
		{"org key exports another org", orgKey, "POST", "/audit_logs/exports", `{"organization_id":"org_b",` + rng + `}`, 403, "organization_not_allowed"},
		{"org key sets another org's retention", orgKey, "PUT", "/organizations/org_b/audit_logs_retention", `{"retention_period_in_days":30}`, 403, "organization_not_allowed"},
		{"org key sets its retention", orgKey, "PUT", "/organizations/org_a/audit_logs_retention", `{"retention_period_in_days":30}`, 200, ""},
		{"org key registers another org's schema", orgKey, "POST", "/organizations/org_b/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, 403, "organization_not_allowed"},
		{"org key registers its org's schema", orgKey, "POST", "/organizations/org_a/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, 201, ""},
		{"org key registers an environment schema", orgKey, "POST", "/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, 403, "organization_not_allowed"},
		{"org key links another org", orgKey, "POST", "/portal/links", `{"organization_id":"org_b"}`, 403, "organization_not_allowed"},
		{"org key manages keys", orgKey, "GET", "/admin/keys", "", 403, "insufficient_scope"},
		{"reader lists", reader, "GET", "/audit_logs/events?organization_id=org_b", "", 200, ""},
		{"reader emits", reader, "POST", "/audit_logs/events", string(eventBody("org_b", "user.signed_in", at, nil)), 403, "insufficient_scope"},
		{"reader sets retention", reader, "PUT", "/organizations/org_b/audit_logs_retention", `{"retention_period_in_days":30}`, 403, "insufficient_scope"},
		{"reader reads the self-audit organization", reader, "GET", "/audit_logs/events?organization_id=org_logbook", "", 403, "organization_not_allowed"},
		{"writer emits", writer, "POST", "/audit_logs/events", string(eventBody("org_b", "user.signed_in", at, nil)), 200, ""},
		{"writer lists", writer, "GET", "/audit_logs/events?organization_id=org_b", "", 403, "insufficient_scope"},
		{"full key reads the self-audit organization", admin, "GET", "/audit_logs/events?organization_id=org_logbook", "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.c.do(tt.method, tt.path, []byte(tt.body))
			assert.Equal(t, tt.status, r.status, "%s", r.raw)
			if tt.code != "" {
				assert.Equal(t, tt.code, r.body["code"])
				assert.NotEmpty(t, r.body["message"])
			}
		})
	}

	// A bulk line for an organization the key may not name fails alone.
	lines := ndjsonLine("org_a", 1, "") + "\n" + ndjsonLine("org_b", 2, "") + "\n" + ndjsonLine("org_logbook", 3, "")
	status, res := orgKey.bulk([]byte(lines), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", res)
	results := res["results"].([]any)
	assert.Equal(t, "accepted", results[0].(map[string]any)["status"])
	for _, i := range []int{1, 2} {
		line := results[i].(map[string]any)
		assert.Equal(t, "error", line["status"])
		assert.Equal(t, float64(403), line["error"].(map[string]any)["status"])
	}
}

// Shortening a retention to one day is on record: the change is an event of the self-audit
// organization, found through the search API, naming the key and the request's address.
func TestShortenedRetentionIsOnRecord(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	r := c.do("PUT", "/organizations/org_short/audit_logs_retention", []byte(`{"retention_period_in_days":1}`),
		"User-Agent", "retention-test/1.0")
	require.Equal(t, 200, r.status, "%s", r.raw)

	var found map[string]any
	require.Eventually(t, func() bool {
		r := c.list("organization_id=org_logbook&actions=logbook.retention.updated&limit=100")
		if r.status != 200 {
			return false
		}
		for _, d := range r.body["data"].([]any) {
			ev := d.(map[string]any)
			for _, tg := range ev["targets"].([]any) {
				if tg.(map[string]any)["id"] == "org_short" {
					found = ev
					return true
				}
			}
		}
		return false
	}, 20*time.Second, 50*time.Millisecond, "the retention change never appeared in org_logbook")
	assert.Equal(t, "org_logbook", found["organization_id"])
	assert.Equal(t, "logbook.retention.updated", found["action"])
	actor := found["actor"].(map[string]any)
	assert.Equal(t, "env", actor["id"])
	assert.Equal(t, "api_key", actor["type"])
	assert.Equal(t, "env", actor["name"])
	ctx := found["context"].(map[string]any)
	assert.Equal(t, "127.0.0.1", ctx["location"])
	assert.Equal(t, "retention-test/1.0", ctx["user_agent"])
	meta := found["metadata"].(map[string]any)
	assert.Equal(t, float64(1), meta["retention_period_in_days"])
	assert.NotEmpty(t, meta["request_id"])
}

// No producer writes into the self-audit organization through the public API, whatever its key:
// neither events (single or bulk) nor schemas that would judge Logbook's own records.
func TestNoProducerWritesIntoTheSelfAuditOrganization(t *testing.T) {
	a := startT(t)
	admin := a.client(t, testKey)
	at := time.Now().Add(-time.Minute)
	before := streamMsgs(t, a, event.StreamRaw)
	for _, tt := range []struct {
		name, method, path, body string
		code                     string
	}{
		{"event", "POST", "/audit_logs/events", string(eventBody("org_logbook", "logbook.api_key.created", at, nil)), "reserved_organization"},
		{"organization schema", "POST", "/organizations/org_logbook/audit_logs/actions/doc.x/schemas", `{"targets":[{"type":"t"}]}`, "reserved_organization"},
		{"schema of a logbook action", "POST", "/audit_logs/actions/logbook.retention.updated/schemas", `{"targets":[{"type":"t"}]}`, "reserved_action"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := admin.do(tt.method, tt.path, []byte(tt.body))
			assert.Equal(t, 403, r.status, "%s", r.raw)
			assert.Equal(t, tt.code, r.body["code"])
		})
	}
	status, res := admin.bulk([]byte(ndjsonLine("org_logbook", 4, "")), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", res)
	line := res["results"].([]any)[0].(map[string]any)
	require.Equal(t, "error", line["status"], "%v", res)
	assert.Equal(t, "reserved_organization", line["error"].(map[string]any)["code"])
	assert.Equal(t, before, streamMsgs(t, a, event.StreamRaw), "nothing reached the raw stream")
}

// Every administrative change of this branch is on record in org_logbook, with its targets; reads
// are not.
func TestEveryAdminChangeIsOnRecord(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	now := time.Now().UTC()
	ops := c.createKey(`{"name":"ops","scopes":["events:read"]}`)
	require.Equal(t, 200, c.do("DELETE", "/admin/keys/ops", nil).status)
	require.Equal(t, 201, c.do("POST", "/audit_logs/actions/doc.audited/schemas", []byte(`{"targets":[{"type":"team"}]}`)).status)
	require.Equal(t, 201, c.do("POST", "/organizations/org_rec/audit_logs/actions/doc.audited/schemas", []byte(`{"targets":[{"type":"team"}]}`)).status)
	exp := c.do("POST", "/audit_logs/exports", []byte(fmt.Sprintf(`{"organization_id":"org_rec","range_start":%q,"range_end":%q}`,
		now.Add(-time.Hour).Format(time.RFC3339), now.Format(time.RFC3339))))
	require.Equal(t, 201, exp.status, "%s", exp.raw)
	require.Equal(t, 201, c.do("POST", "/portal/links", []byte(`{"organization_id":"org_rec"}`)).status)
	require.Equal(t, 200, c.do("PUT", "/organizations/org_rec/audit_logs_retention", []byte(`{"retention_period_in_days":30}`)).status)
	c.listKeys()
	c.do("GET", "/audit_logs/actions", nil)

	want := map[string][]string{
		"logbook.api_key.created":    {"api_key:ops"},
		"logbook.api_key.revoked":    {"api_key:ops"},
		"logbook.schema.registered":  {"audit_log_action:doc.audited"},
		"logbook.export.requested":   {"organization:org_rec", "audit_log_export:" + exp.body["id"].(string)},
		"logbook.viewer_link.issued": {"organization:org_rec"},
		"logbook.retention.updated":  {"organization:org_rec"},
	}
	var data []any
	require.Eventually(t, func() bool {
		data, _ = c.list("organization_id=org_logbook&actor_ids=env&limit=100").body["data"].([]any)
		return len(data) >= 7
	}, 20*time.Second, 50*time.Millisecond, "seven changes are recorded")
	require.Len(t, data, 7, "reads are not recorded")
	startUp := c.list("organization_id=org_logbook&actor_types=system").body["data"].([]any)
	require.Len(t, startUp, 1, "the env key's creation at the first start is on record")
	assert.Equal(t, "logbook.api_key.created", startUp[0].(map[string]any)["action"])
	assert.Equal(t, "LOGBOOK_API_KEY set", startUp[0].(map[string]any)["metadata"].(map[string]any)["reason"])
	got := map[string]int{}
	for _, d := range data {
		ev := d.(map[string]any)
		action := ev["action"].(string)
		got[action]++
		var targets []string
		for _, tg := range ev["targets"].([]any) {
			m := tg.(map[string]any)
			targets = append(targets, m["type"].(string)+":"+m["id"].(string))
		}
		for _, w := range want[action] {
			assert.Contains(t, targets, w, action)
		}
		assert.Equal(t, "env", ev["actor"].(map[string]any)["id"], action)
		if action == "logbook.api_key.created" {
			assert.Equal(t, ops.Prefix, ev["metadata"].(map[string]any)["key_prefix"])
		}
	}
	assert.Equal(t, map[string]int{"logbook.api_key.created": 1, "logbook.api_key.revoked": 1, "logbook.schema.registered": 2,
		"logbook.export.requested": 1, "logbook.viewer_link.issued": 1, "logbook.retention.updated": 1}, got)

	// The trail exports like any organization's events.
	exp = c.do("POST", "/audit_logs/exports", []byte(fmt.Sprintf(`{"organization_id":"org_logbook","range_start":%q,"range_end":%q}`,
		now.Add(-time.Hour).Format(time.RFC3339), time.Now().Add(time.Hour).Format(time.RFC3339))))
	require.Equal(t, 201, exp.status, "%s", exp.raw)
	ready := c.pollExport(exp.body["id"].(string))
	res, body := download(t, ready.body["url"].(string))
	require.Equal(t, 200, res.StatusCode)
	assert.Contains(t, string(body), "logbook.retention.updated")
}
