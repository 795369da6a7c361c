package reconcile

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/wire"
)

// API serves GET /admin/reconcile?since=<RFC 3339 time or Go duration, default 24h>&window=<Go
// duration, default 1h>&organization_id=<one organization, default all>.
type API struct {
	js    jetstream.JetStream
	store Store
}

// NewAPI returns the admin endpoint over js and store.
func NewAPI(js jetstream.JetStream, store Store) *API { return &API{js: js, store: store} }

// Register adds the route to g (which applies authentication); it needs the admin scope.
func (a *API) Register(g *echo.Group) {
	g.GET("/admin/reconcile", a.reconcile, wire.Need(apikey.ScopeAdmin))
}

func (a *API) reconcile(c echo.Context) error {
	since, err := ParseSince(c.QueryParam("since"), time.Now())
	if err != nil {
		return wire.BadRequest("invalid_query_parameter", err.Error(), []map[string]string{{"field": "since", "code": err.Error()}})
	}
	window := DefaultWindow
	if w := c.QueryParam("window"); w != "" {
		if window, err = time.ParseDuration(w); err != nil || window < time.Minute {
			return wire.BadRequest("invalid_query_parameter", "window must be a duration of at least 1m, such as 1h",
				[]map[string]string{{"field": "window", "code": "window must be a duration of at least 1m"}})
		}
	}
	org := c.QueryParam("organization_id")
	if org != "" && !event.ValidOrgID(org) {
		return wire.BadRequest("invalid_query_parameter", "organization_id is not a valid organization id",
			[]map[string]string{{"field": "organization_id", "code": "invalid"}})
	}
	rep, err := Run(c.Request().Context(), a.js, a.store, Options{Since: since, Window: window, Org: org})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

// ParseSince reads a reconciliation start: an RFC 3339 time, a Go duration back from now ("2h"),
// or "" for 24 hours back.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now.Add(-24 * time.Hour), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errSince
	}
	return t, nil
}

var errSince = sinceError("since must be an RFC 3339 time or a duration such as 2h")

type sinceError string

func (e sinceError) Error() string { return string(e) }
