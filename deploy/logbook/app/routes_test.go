package app

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
)

// routeScopes is the scope every route of the single process needs. "public" routes take no API
// key (health, metrics, the signed download, the portal's page); "viewer" routes take a viewer
// link's token instead. A route missing here fails TestEveryRouteChecksItsScope: give it a scope.
var routeScopes = map[string]string{
	"POST /audit_logs/events":                                                     string(apikey.ScopeEventsWrite),
	"POST /audit_logs/events/bulk":                                                string(apikey.ScopeEventsWrite),
	"GET /audit_logs/events":                                                      string(apikey.ScopeEventsRead),
	"GET /audit_logs/events/:id":                                                  string(apikey.ScopeEventsRead),
	"POST /audit_logs/exports":                                                    string(apikey.ScopeEventsRead),
	"GET /audit_logs/exports/:id":                                                 string(apikey.ScopeEventsRead),
	"POST /portal/links":                                                          string(apikey.ScopeEventsRead),
	"POST /audit_logs/actions/:action/schemas":                                    string(apikey.ScopeSchemasWrite),
	"POST /organizations/:org/audit_logs/actions/:action/schemas":                 string(apikey.ScopeSchemasWrite),
	"POST /audit_logs/actions/:action/schemas/:version/retire":                    string(apikey.ScopeAdmin),
	"POST /organizations/:org/audit_logs/actions/:action/schemas/:version/retire": string(apikey.ScopeAdmin),
	"GET /audit_logs/actions/:action/schemas":                                     string(apikey.ScopeSchemasRead),
	"GET /organizations/:org/audit_logs/actions/:action/schemas":                  string(apikey.ScopeSchemasRead),
	"GET /audit_logs/actions":                                                     string(apikey.ScopeSchemasRead),
	"PUT /organizations/:org/audit_logs_retention":                                string(apikey.ScopeRetentionWrite),
	"GET /organizations/:org/audit_logs_retention":                                string(apikey.ScopeRetentionRead),
	"GET /organizations/:org/audit_log_configuration":                             string(apikey.ScopeRetentionRead),
	"GET /admin/keys":                                                             string(apikey.ScopeAdmin),
	"POST /admin/keys":                                                            string(apikey.ScopeAdmin),
	"DELETE /admin/keys/:name":                                                    string(apikey.ScopeAdmin),
	"GET /admin/reconcile":                                                        string(apikey.ScopeAdmin),
	"POST /admin/rejected/redrive":                                                string(apikey.ScopeAdmin),
	"DELETE /alert_rules/:id":                                                     string(apikey.ScopeAdmin),
	"DELETE /log_streams/:id":                                                     string(apikey.ScopeAdmin),
	"GET /alert_rules":                                                            string(apikey.ScopeAdmin),
	"GET /alert_rules/:id":                                                        string(apikey.ScopeAdmin),
	"GET /alert_rules/:id/firings":                                                string(apikey.ScopeAdmin),
	"GET /log_streams":                                                            string(apikey.ScopeAdmin),
	"GET /log_streams/:id":                                                        string(apikey.ScopeAdmin),
	"PATCH /alert_rules/:id":                                                      string(apikey.ScopeAdmin),
	"PATCH /log_streams/:id":                                                      string(apikey.ScopeAdmin),
	"POST /alert_rules":                                                           string(apikey.ScopeAdmin),
	"POST /log_streams":                                                           string(apikey.ScopeAdmin),
	"POST /log_streams/:id/pause":                                                 string(apikey.ScopeAdmin),
	"POST /log_streams/:id/replay":                                                string(apikey.ScopeAdmin),
	"POST /log_streams/:id/resume":                                                string(apikey.ScopeAdmin),

	"GET /healthz":                          "public",
	"GET /readyz":                           "public",
	"GET /metrics":                          "public",
	"GET /audit_logs/exports/:id/download":  "public",
	"GET /portal":                           "public",
	"GET /portal/":                          "public",
	"GET /portal/assets/*":                  "public",
	"GET /portal/api/session":               "viewer",
	"GET /portal/api/audit_logs/events":     "viewer",
	"GET /portal/api/audit_logs/events/:id": "viewer",
	"POST /portal/api/exports":              "viewer",
	"GET /portal/api/exports/:id":           "viewer",
	"GET /portal/api/log_streams":           "viewer",
}

// concrete fills a route template's parameters.
func concrete(path string) string {
	r := strings.NewReplacer(":name", "nobody", ":org", "org_scope", ":action", "doc.scope",
		":id", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "*", "x")
	return r.Replace(path)
}

// Every registered route checks its scope: without a key it is 401; with a key lacking its scope
// (a key having every other scope) it is 403 insufficient_scope in the WorkOS envelope; with a key
// having only that scope it passes authentication (whatever the handler then answers).
func TestEveryRouteChecksItsScope(t *testing.T) {
	a := startT(t)
	admin := a.client(t, testKey)
	only, lacking := map[apikey.Scope]*client{}, map[apikey.Scope]*client{}
	for _, s := range apikey.Scopes {
		name := strings.ReplaceAll(string(s), ":", "-")
		only[s] = a.client(t, admin.createKey(`{"name":"only-`+name+`","scopes":["`+string(s)+`"]}`).Key)
		var others []string
		for _, o := range apikey.Scopes {
			if o != s && o != apikey.ScopeAdmin {
				others = append(others, `"`+string(o)+`"`)
			}
		}
		lacking[s] = a.client(t, admin.createKey(`{"name":"lacking-`+name+`","scopes":[`+strings.Join(others, ",")+`]}`).Key)
	}

	seen := map[string]bool{}
	for _, r := range a.echo.Routes() {
		if strings.HasPrefix(r.Method, "echo_route_not_found") {
			continue
		}
		route := r.Method + " " + r.Path
		seen[route] = true
		want, ok := routeScopes[route]
		if !assert.True(t, ok, "route %s has no scope in routeScopes", route) {
			continue
		}
		path := concrete(r.Path)
		t.Run(route, func(t *testing.T) {
			switch want {
			case "public":
				return
			case "viewer":
				res := a.client(t, testKey).do(r.Method, path, []byte(`{}`))
				assert.Equal(t, 401, res.status, "an API key is no viewer token: %s", res.raw)
				return
			}
			scope := apikey.Scope(want)
			res := a.client(t, "").do(r.Method, path, []byte(`{}`))
			assert.Equal(t, 401, res.status, "no key: %s", res.raw)
			res = lacking[scope].do(r.Method, path, []byte(`{}`))
			require.Equal(t, 403, res.status, "a key without %s: %s", scope, res.raw)
			assert.Equal(t, "insufficient_scope", res.body["code"])
			assert.Contains(t, res.body["message"], string(scope))
			res = only[scope].do(r.Method, path, []byte(`{}`))
			assert.NotContains(t, []int{401, 403}, res.status, "a key with only %s passes: %s", scope, res.raw)
		})
	}
	for route := range routeScopes {
		assert.True(t, seen[route], "routeScopes lists %s, which is not registered", route)
	}
}
