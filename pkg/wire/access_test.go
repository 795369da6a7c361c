package wire_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/wire"
)

// keyring is a fixed set of keys by secret.
type keyring map[string]*apikey.Key

func (k keyring) Lookup(s string) (*apikey.Key, bool) { v, ok := k[s]; return v, ok }

func TestScopesAndOrganizationsAreChecked(t *testing.T) {
	keys := keyring{
		"full":   {Name: "full", Hash: apikey.Hash("full")},
		"reader": {Name: "reader", Hash: apikey.Hash("reader"), Scopes: []apikey.Scope{apikey.ScopeEventsRead}},
		"org-a":  {Name: "org-a", Hash: apikey.Hash("org-a"), Organizations: []string{"org_a"}},
	}
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	g := e.Group("", wire.Auth(keys))
	var seen wire.Caller
	g.GET("/orgs/:org", func(c echo.Context) error {
		if err := wire.AllowOrg(c.Request().Context(), c.Param("org")); err != nil {
			return err
		}
		seen, _ = wire.CallerFrom(c.Request().Context())
		return c.JSON(200, map[string]bool{"ok": true})
	}, wire.Need(apikey.ScopeEventsWrite))
	tests := []struct {
		key, org string
		status   int
		code     string
	}{
		{"", "org_a", 401, "unauthorized"},
		{"nope", "org_a", 401, "unauthorized"},
		{"full", "org_b", 200, ""},
		{"full", "org_logbook", 200, ""},
		{"reader", "org_a", 403, "insufficient_scope"},
		{"org-a", "org_a", 200, ""},
		{"org-a", "org_b", 403, "organization_not_allowed"},
		{"org-a", "org_logbook", 403, "organization_not_allowed"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/orgs/"+tt.org, nil)
		if tt.key != "" {
			req.Header.Set("Authorization", "Bearer "+tt.key)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		assert.Equal(t, tt.status, rec.Code, "%s %s: %s", tt.key, tt.org, rec.Body)
		if tt.code != "" {
			var body map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			assert.Equal(t, tt.code, body["code"])
			assert.NotEmpty(t, body["message"])
		}
	}

	// The caller carries the key and the request's address: X-Forwarded-For counts only behind a
	// private or loopback peer (a proxy).
	for _, tt := range []struct{ peer, xff, want string }{
		{"10.0.0.2:5000", "203.0.113.7", "203.0.113.7"},
		{"198.51.100.1:5000", "203.0.113.7", "198.51.100.1"},
		{"127.0.0.1:5000", "", "127.0.0.1"},
	} {
		req := httptest.NewRequest("GET", "/orgs/org_a", nil)
		req.RemoteAddr = tt.peer
		req.Header.Set("Authorization", "Bearer full")
		req.Header.Set("User-Agent", "probe/1")
		if tt.xff != "" {
			req.Header.Set("X-Forwarded-For", tt.xff)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, tt.want, seen.IP)
		assert.Equal(t, "full", seen.Name)
		assert.Equal(t, wire.ActorAPIKey, seen.ActorType)
		assert.Equal(t, "probe/1", seen.UserAgent)
		assert.Equal(t, rec.Header().Get("X-Request-ID"), seen.RequestID)
	}
}
