package logstreams_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/logstreams"
)

type recorded struct{ changes []logstream.Change }

func (r *recorded) Record(_ context.Context, c logstream.Change) error {
	r.changes = append(r.changes, c)
	return nil
}

// The wiring's Access restricts the routes: a scope check on writes, and organizations the caller
// may not act for are refused (create, get) and left out of lists; nothing refused is recorded.
func TestAccessRestrictsCallers(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	st, err := logstreams.Open(ctx, js, 1)
	require.NoError(t, err)
	rec := &recorded{}
	api := logstreams.New(js, st, rec)
	api.UseAccess(logstreams.Access{
		Write: func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				if c.Request().Header.Get("X-Test-Scope") != "admin" {
					return wire.Forbidden("insufficient_scope", "no")
				}
				return next(c)
			}
		},
		Org: func(_ context.Context, org string) error {
			if org != "org_mine" {
				return wire.Forbidden("organization_not_allowed", "no")
			}
			return nil
		},
	})
	e := wire.NewServer(nil)
	api.Register(e.Group(""))
	do := func(method, path, body, scope string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Test-Scope", scope)
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		return w
	}
	body := func(org string) string {
		return `{"organization_id":"` + org + `","name":"s","destination":{"type":"splunk","url":"https://s:8088","token":"t"}}`
	}
	assert.Equal(t, http.StatusForbidden, do("POST", "/log_streams", body("org_mine"), "read").Code, "a write needs the scope")
	assert.Equal(t, http.StatusForbidden, do("POST", "/log_streams", body("org_theirs"), "admin").Code)
	assert.Equal(t, http.StatusForbidden, do("POST", "/log_streams", `{"name":"s","destination":{"type":"splunk","url":"https://s:8088","token":"t"}}`, "admin").Code,
		"an environment-wide stream needs a key for every organization")
	require.Empty(t, rec.changes, "nothing refused is recorded")
	w := do("POST", "/log_streams", body("org_mine"), "admin")
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Len(t, rec.changes, 1)

	// A stream of another organization, made without the API.
	other := logstream.Stream{ID: logstream.IDPrefix + "01OTHER", OrganizationID: "org_theirs", Name: "x", State: "active",
		Destination: logstream.Destination{Type: "splunk", URL: "https://s:8088"}}
	require.NoError(t, st.Create(ctx, &other, &logstream.Secrets{Token: "t"}, logstream.Start{}))
	list := do("GET", "/log_streams", "", "read")
	require.Equal(t, http.StatusOK, list.Code)
	assert.NotContains(t, list.Body.String(), other.ID)
	assert.Equal(t, 1, strings.Count(list.Body.String(), `"object":"log_stream"`))
	assert.Equal(t, http.StatusForbidden, do("GET", "/log_streams/"+other.ID, "", "read").Code)
	assert.Equal(t, http.StatusForbidden, do("DELETE", "/log_streams/"+other.ID, "", "admin").Code)
}
