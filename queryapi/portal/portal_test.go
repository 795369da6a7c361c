package portal_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/export"
	"github.com/logbookhq/logbook/queryapi/portal"
	"github.com/logbookhq/logbook/queryapi/search"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

const apiKey = "sk_test_portal_0123456789"

type noRetention struct{}

func (noRetention) Days(string) uint16 { return 0 }

type oneKey struct{}

func (oneKey) Lookup(k string) (*apikey.Key, bool) {
	return &apikey.Key{Name: "test", Hash: apikey.Hash(k)}, k == apiKey
}

type fixture struct {
	t          *testing.T
	srv        *httptest.Server
	links      *portal.Links
	orgA, orgB string
	idsA, idsB []string
}

// newFixture serves the portal with the real search and export APIs over the embedded ClickHouse
// and a real JetStream, with two organizations' events stored.
func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	log := slog.New(slog.DiscardHandler)
	f := &fixture{t: t, orgA: storetest.NewOrg(t), orgB: storetest.NewOrg(t)}
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	for _, org := range []string{f.orgA, f.orgB} {
		var recs []*event.Record
		for i, action := range []string{"user.signed_in", "document.updated", "user.signed_out"} {
			id := "01PORTAL" + strings.ToUpper(org[len(org)-6:]) + string(rune('A'+i))
			recs = append(recs, &event.Record{
				ID: id, OrganizationID: org, ReceivedAt: at,
				Event: event.Event{Action: action, OccurredAt: at.Add(time.Duration(i) * time.Minute),
					Actor:   event.Entity{ID: "user_" + org, Type: "user", Name: "Ada"},
					Targets: []event.Entity{{ID: "team_1", Type: "team"}}, Context: event.Context{Location: "10.0.0.1"},
					Metadata: map[string]any{"secret_of": org}},
			})
			if org == f.orgA {
				f.idsA = append(f.idsA, id)
			} else {
				f.idsB = append(f.idsB, id)
			}
		}
		require.NoError(t, st.Insert(ctx, "test:"+org+":portal", recs))
	}
	cfg := export.DefaultConfig()
	cfg.Sweep = 100 * time.Millisecond
	exp, err := export.Open(ctx, js, st, noRetention{}, cfg, log)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = exp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	f.links, err = portal.LoadLinks(ctx, js)
	require.NoError(t, err)
	e := wire.NewServer(log)
	g := e.Group("", wire.Auth(oneKey{}))
	exp.Register(g)
	exp.RegisterDownload(e)
	portal.New(f.links, search.New(st, noRetention{}), exp, portal.DefaultConfig(), log).Register(e, g)
	f.srv = httptest.NewServer(e)
	t.Cleanup(f.srv.Close)
	return f
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(method, path, auth string, body string) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(f.t, err)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(f.t, err)
	return reply{res.StatusCode, res.Header, string(b)}
}

// link creates a viewer link for org with the API key and returns its token.
func (f *fixture) link(org string) string {
	f.t.Helper()
	r := f.do("POST", "/portal/links", apiKey, `{"organization_id":"`+org+`"}`)
	require.Equal(f.t, http.StatusCreated, r.status, r.body)
	var out struct{ URL, ExpiresAt string }
	require.NoError(f.t, json.Unmarshal([]byte(r.body), &struct {
		URL       *string `json:"url"`
		ExpiresAt *string `json:"expires_at"`
	}{&out.URL, &out.ExpiresAt}))
	u, err := url.Parse(out.URL)
	require.NoError(f.t, err)
	assert.Equal(f.t, "/portal/", u.Path)
	exp, err := time.Parse(time.RFC3339, out.ExpiresAt)
	require.NoError(f.t, err)
	assert.WithinDuration(f.t, time.Now().Add(time.Hour), exp, time.Minute)
	return u.Query().Get("token")
}

// assertNoData checks that r shows no stored event (an id the request itself named aside).
func (f *fixture) assertNoData(r reply, path string) {
	f.t.Helper()
	for _, id := range append(append([]string{}, f.idsA...), f.idsB...) {
		if !strings.Contains(path, id) {
			assert.NotContains(f.t, r.body, id)
		}
	}
	assert.NotContains(f.t, r.body, "secret_of")
}

func TestCreatingLinksNeedsTheAPIKey(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, key, body string
		want            int
	}{
		{"no key", "", `{"organization_id":"org_a"}`, http.StatusUnauthorized},
		{"a viewer token is not an API key", f.link(f.orgA), `{"organization_id":"org_a"}`, http.StatusUnauthorized},
		{"not JSON", apiKey, `org_a`, http.StatusBadRequest},
		{"unknown field", apiKey, `{"organization_id":"org_a","scope":"write"}`, http.StatusBadRequest},
		{"bad organization", apiKey, `{"organization_id":"org.a*"}`, http.StatusUnprocessableEntity},
		{"missing organization", apiKey, `{}`, http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do("POST", "/portal/links", tt.key, tt.body)
			assert.Equal(t, tt.want, r.status, r.body)
		})
	}
}

func TestViewerReadsOnlyItsOrganization(t *testing.T) {
	f := newFixture(t)
	tok := f.link(f.orgA)

	r := f.do("GET", "/portal/api/audit_logs/events?limit=10", tok, "")
	require.Equal(t, http.StatusOK, r.status, r.body)
	var list struct {
		Data []struct {
			ID             string `json:"id"`
			OrganizationID string `json:"organization_id"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	require.Len(t, list.Data, 3)
	assert.Equal(t, f.idsA[2], list.Data[0].ID, "newest first")
	for _, e := range list.Data {
		assert.Equal(t, f.orgA, e.OrganizationID)
	}

	r = f.do("GET", "/portal/api/audit_logs/events?actions=document.*", tok, "")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, f.idsA[1])
	assert.NotContains(t, r.body, f.idsA[0], "filters apply")

	r = f.do("GET", "/portal/api/audit_logs/events/"+f.idsA[0], tok, "")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, "secret_of")

	r = f.do("GET", "/portal/api/session", tok, "")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, `"organization_id":"`+f.orgA+`"`)
}

// A forged, expired or other organization's link yields 401 or 403 and never any event.
func TestViewerIsRefusedWithoutAGoodLink(t *testing.T) {
	f := newFixture(t)
	tokA := f.link(f.orgA)
	parts := strings.Split(tokA, ".")
	forgedForB := f.orgB + "." + parts[1] + "." + parts[2]
	expired := f.links.Issue(f.orgA, time.Now().Add(-time.Second))

	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"no token", "GET", "/portal/api/audit_logs/events", "", http.StatusUnauthorized},
		{"API key instead of a token", "GET", "/portal/api/audit_logs/events", apiKey, http.StatusUnauthorized},
		{"forged: organization swapped", "GET", "/portal/api/audit_logs/events", forgedForB, http.StatusUnauthorized},
		{"forged: signature altered", "GET", "/portal/api/audit_logs/events", tokA[:len(tokA)-3] + "AAA", http.StatusUnauthorized},
		{"expired", "GET", "/portal/api/audit_logs/events", expired, http.StatusUnauthorized},
		{"other organization in the query", "GET", "/portal/api/audit_logs/events?organization_id=" + f.orgB, tokA, http.StatusForbidden},
		{"organization given twice", "GET", "/portal/api/audit_logs/events?organization_id=" + f.orgA + "&organization_id=" + f.orgB, tokA, http.StatusForbidden},
		{"other organization's event by id", "GET", "/portal/api/audit_logs/events/" + f.idsB[0], tokA, http.StatusNotFound},
		{"writing events", "POST", "/portal/api/audit_logs/events", tokA, http.StatusMethodNotAllowed},
		{"page: forged", "GET", "/portal/?token=" + url.QueryEscape(forgedForB), "", http.StatusUnauthorized},
		{"page: expired", "GET", "/portal/?token=" + url.QueryEscape(expired), "", http.StatusUnauthorized},
		{"page: no token", "GET", "/portal/", "", http.StatusUnauthorized},
		{"page: other organization", "GET", "/portal/?organization_id=" + f.orgB + "&token=" + url.QueryEscape(tokA), "", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.token, "")
			assert.Equal(t, tt.want, r.status, r.body)
			f.assertNoData(r, tt.path)
			if strings.HasPrefix(tt.name, "page:") {
				assert.Contains(t, r.header.Get("Content-Type"), "text/html")
				assert.Contains(t, r.body, `id="denied-reason"`)
			}
		})
	}
	r := f.do("GET", "/portal/?token="+url.QueryEscape(expired), "", "")
	assert.Contains(t, r.body, "expired")
}

func TestPageAndAssets(t *testing.T) {
	f := newFixture(t)
	r := f.do("GET", "/portal/?token="+url.QueryEscape(f.link(f.orgA)), "", "")
	require.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.body, `<table id="events">`)
	assert.Contains(t, r.header.Get("Content-Security-Policy"), "script-src 'self'")
	assert.Equal(t, "no-referrer", r.header.Get("Referrer-Policy"))
	assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
	f.assertNoData(r, "") // the page itself holds no data; it asks for it with the token

	r = f.do("GET", "/portal/assets/app.js", "", "")
	assert.Equal(t, http.StatusOK, r.status)
	assert.Contains(t, r.header.Get("Content-Type"), "javascript")
	assert.NotContains(t, r.body, "innerHTML", "data reaches the page only as text")
	for _, p := range []string{"/portal/assets/denied.html", "/portal/assets/../portal.go", "/portal/assets/nope.js"} {
		assert.Equal(t, http.StatusNotFound, f.do("GET", p, "", "").status, p)
	}
}

// The export button's routes run a real export of the viewer's organization only, and a viewer
// of another organization cannot poll it.
func TestViewerExportsItsOrganization(t *testing.T) {
	f := newFixture(t)
	tokA, tokB := f.link(f.orgA), f.link(f.orgB)

	r := f.do("POST", "/portal/api/exports", tokA, `{"organization_id":"`+f.orgB+`"}`)
	assert.Equal(t, http.StatusBadRequest, r.status, "the organization comes from the token, never the page")
	r = f.do("POST", "/portal/api/exports", tokA, `{"actions":["user.signed_in","user.signed_out"],"actor_types":["user"],"target_ids":["team_1"],"q":"ada"}`)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	var x struct{ ID, State, Handle, URL string }
	require.NoError(t, json.Unmarshal([]byte(r.body), &x))
	assert.Equal(t, "pending", x.State)
	require.NotEmpty(t, x.Handle)

	poll := "/portal/api/exports/" + x.ID + "?handle=" + url.QueryEscape(x.Handle)
	assert.Equal(t, http.StatusNotFound, f.do("GET", "/portal/api/exports/"+x.ID+"?handle=x", tokA, "").status)
	assert.Equal(t, http.StatusNotFound, f.do("GET", poll, tokB, "").status, "another organization's viewer cannot poll it")
	require.Eventually(t, func() bool {
		r = f.do("GET", poll, tokA, "")
		require.Equal(t, http.StatusOK, r.status, r.body)
		require.NoError(t, json.Unmarshal([]byte(r.body), &x))
		return x.State == "ready"
	}, 30*time.Second, 100*time.Millisecond)
	require.True(t, strings.HasPrefix(x.URL, f.srv.URL+"/audit_logs/exports/"), x.URL)
	res, err := http.Get(x.URL)
	require.NoError(t, err)
	defer res.Body.Close()
	csv, _ := io.ReadAll(res.Body)
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(csv), f.idsA[0])
	assert.Contains(t, string(csv), f.idsA[2])
	assert.NotContains(t, string(csv), f.idsA[1], "the action filter applies")
	for _, id := range f.idsB {
		assert.NotContains(t, string(csv), id)
	}
}
