// Package alerts serves the alert-rule API (Logbook's own, docs/api.md): create, list, get,
// update and delete an organization's rules, and list a rule's firings. Evaluation and delivery
// are the writer's (writer/alerts). Webhook signing secrets are sealed at rest and never returned
// (a generated one is shown once); every change is recorded in org_logbook before it is made.
package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/logstreams"
)

// Actions recorded.
const (
	ActionCreated = "logbook.alert_rule.created"
	ActionUpdated = "logbook.alert_rule.updated"
	ActionDeleted = "logbook.alert_rule.deleted"
)

// Open prepares the alert buckets (replicas copies) and returns their Store.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*alertrule.Store, error) {
	if err := alertrule.EnsureBuckets(ctx, js, replicas); err != nil {
		return nil, err
	}
	return alertrule.Open(ctx, js)
}

// API serves /alert_rules. Safe for concurrent use.
type API struct {
	st      *alertrule.Store
	streams *logstream.Store
	rec     logstream.Recorder
	access  logstreams.Access
	now     func() time.Time
}

// UseAccess restricts callers with acc (as the log stream API does); call it before Register.
func (a *API) UseAccess(acc logstreams.Access) { a.access = acc }

func (a *API) allowed(ctx context.Context, org string) error {
	if a.access.Org == nil {
		return nil
	}
	return a.access.Org(ctx, org)
}

func guards(m echo.MiddlewareFunc) []echo.MiddlewareFunc {
	if m == nil {
		return nil
	}
	return []echo.MiddlewareFunc{m}
}

// New returns the API on st; log streams named as destinations are looked up in streams.
func New(st *alertrule.Store, streams *logstream.Store, rec logstream.Recorder) *API {
	return &API{st: st, streams: streams, rec: rec, now: time.Now}
}

// Register adds the routes to g (behind the API key).
func (a *API) Register(g *echo.Group) {
	r, w := guards(a.access.Read), guards(a.access.Write)
	g.POST("/alert_rules", a.create, w...)
	g.GET("/alert_rules", a.list, r...)
	g.GET("/alert_rules/:id", a.get, r...)
	g.PATCH("/alert_rules/:id", a.update, w...)
	g.DELETE("/alert_rules/:id", a.delete, w...)
	g.GET("/alert_rules/:id/firings", a.firings, r...)
}

// body is a rule as sent: the rule's fields and the webhook's secret.
type body struct {
	OrganizationID  string                 `json:"organization_id"`
	Name            string                 `json:"name"`
	State           string                 `json:"state"`
	Match           *alertrule.Match       `json:"match"`
	Threshold       *alertrule.Threshold   `json:"threshold"`
	CooldownSeconds *int                   `json:"cooldown_seconds"`
	Destination     *alertrule.Destination `json:"destination"`
	SigningSecret   string                 `json:"signing_secret"`
}

func decode(c echo.Context, v any) error {
	b, err := wire.ReadBody(c, 64<<10)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return wire.BadRequest("invalid_request_body", "The body must be one JSON object of the documented fields: "+err.Error(), nil)
	}
	return nil
}

func invalid(err error) error {
	var ve *logstream.ValidationError
	if errors.As(err, &ve) {
		return wire.Unprocessable("invalid_alert_rule", "Validation failed.", ve.Errors)
	}
	return err
}

func (a *API) create(c echo.Context) error {
	var b body
	if err := decode(c, &b); err != nil {
		return err
	}
	now := a.now().UTC().Truncate(time.Millisecond)
	r := alertrule.Rule{ID: alertrule.IDPrefix + ulid.Make().String(), OrganizationID: b.OrganizationID, Name: b.Name,
		State: b.State, Threshold: b.Threshold, CreatedAt: now, UpdatedAt: now}
	if r.State == "" {
		r.State = logstream.StateActive
	}
	if b.Match != nil {
		r.Match = *b.Match
	}
	if b.CooldownSeconds != nil {
		r.CooldownSeconds = *b.CooldownSeconds
	}
	if b.Destination != nil {
		r.Destination = *b.Destination
	}
	sec := alertrule.Secrets{SigningSecret: b.SigningSecret}
	generated := ""
	if r.Destination.Type == alertrule.DestWebhook && sec.SigningSecret == "" {
		sec.SigningSecret = logstream.NewSigningSecret()
		generated = sec.SigningSecret
	}
	if err := a.check(c, &r, &sec); err != nil {
		return err
	}
	if err := a.allowed(c.Request().Context(), r.OrganizationID); err != nil {
		return err
	}
	if err := a.record(c, ActionCreated, &r); err != nil {
		return err
	}
	if err := a.st.Put(c.Request().Context(), &r, &sec, 0); err != nil {
		return err
	}
	v := view(&r)
	v.SigningSecret = generated
	return c.JSON(http.StatusCreated, v)
}

// check validates r and that a log-stream destination exists.
func (a *API) check(c echo.Context, r *alertrule.Rule, sec *alertrule.Secrets) error {
	if err := alertrule.Validate(r, sec); err != nil {
		return invalid(err)
	}
	if r.Destination.Type == alertrule.DestLogStream {
		ls, _, err := a.streams.Get(c.Request().Context(), r.Destination.LogStreamID)
		if errors.Is(err, logstream.ErrNotFound) {
			return wire.Unprocessable("invalid_alert_rule", "Validation failed.",
				[]logstream.FieldError{{Field: "destination.log_stream_id", Code: "no such log stream"}})
		} else if err != nil {
			return err
		}
		// A firing names the organization's events: it may go to that organization's stream, an
		// environment-wide one or Logbook's own, never to another organization's.
		if o := ls.OrganizationID; o != "" && o != r.OrganizationID && o != logstream.AuditOrg {
			return wire.Unprocessable("invalid_alert_rule", "Validation failed.",
				[]logstream.FieldError{{Field: "destination.log_stream_id", Code: "is another organization's log stream"}})
		}
	}
	return nil
}

func (a *API) list(c echo.Context) error {
	org := c.QueryParam("organization_id")
	for k := range c.QueryParams() {
		if k != "organization_id" {
			return wire.BadRequest("invalid_query_parameter", "Unknown parameter "+k+".", []any{map[string]string{"field": k, "code": "unknown"}})
		}
	}
	recs, err := a.st.List(c.Request().Context())
	if err != nil {
		return err
	}
	out := []*View{}
	for _, r := range recs {
		if (org == "" || r.OrganizationID == org) && a.allowed(c.Request().Context(), r.OrganizationID) == nil {
			out = append(out, view(&r.Rule))
		}
	}
	return c.JSON(http.StatusOK, wire.NewList(out, "", ""))
}

func (a *API) load(c echo.Context) (*alertrule.Record, uint64, error) {
	id, err := wire.PathParam(c, "id")
	if err != nil {
		return nil, 0, wire.NotFound("Alert rule not found.")
	}
	r, rev, err := a.st.Get(c.Request().Context(), id)
	if errors.Is(err, alertrule.ErrNotFound) {
		return nil, 0, wire.NotFound("Alert rule not found: '" + id + "'.")
	}
	if err != nil {
		return nil, 0, err
	}
	if err := a.allowed(c.Request().Context(), r.OrganizationID); err != nil {
		return nil, 0, err
	}
	return r, rev, nil
}

func (a *API) get(c echo.Context) error {
	r, _, err := a.load(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, view(&r.Rule))
}

// update changes any field but the organization; a webhook keeps its secret unless one is sent.
func (a *API) update(c echo.Context) error {
	var b body
	if err := decode(c, &b); err != nil {
		return err
	}
	rec, rev, err := a.load(c)
	if err != nil {
		return err
	}
	if b.OrganizationID != "" && b.OrganizationID != rec.OrganizationID {
		return wire.Unprocessable("invalid_alert_rule", "Validation failed.", []logstream.FieldError{{Field: "organization_id", Code: "cannot change"}})
	}
	sec, err := a.st.Secrets(rec)
	if err != nil {
		return err
	}
	r := rec.Rule
	if b.Name != "" {
		r.Name = b.Name
	}
	if b.State != "" {
		r.State = b.State
	}
	if b.Match != nil {
		r.Match = *b.Match
	}
	if b.Threshold != nil {
		r.Threshold = b.Threshold
		if b.Threshold.Count == 0 { // {"threshold": {}} removes it
			r.Threshold = nil
		}
	}
	if b.CooldownSeconds != nil {
		r.CooldownSeconds = *b.CooldownSeconds
	}
	if b.Destination != nil {
		r.Destination = *b.Destination
	}
	if b.SigningSecret != "" {
		sec.SigningSecret = b.SigningSecret
	}
	if err := a.check(c, &r, sec); err != nil {
		return err
	}
	r.UpdatedAt = a.now().UTC().Truncate(time.Millisecond)
	if err := a.record(c, ActionUpdated, &r); err != nil {
		return err
	}
	err = a.st.Put(c.Request().Context(), &r, sec, rev)
	if errors.Is(err, logstream.ErrConflict) {
		return wire.Conflict("conflict", "The alert rule changed at the same time; read it again and retry.")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, view(&r))
}

func (a *API) delete(c echo.Context) error {
	r, _, err := a.load(c)
	if err != nil {
		return err
	}
	if err := a.record(c, ActionDeleted, &r.Rule); err != nil {
		return err
	}
	if err := a.st.Delete(c.Request().Context(), r.ID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "alert_rule", "id": r.ID, "deleted": true})
}

func (a *API) firings(c echo.Context) error {
	r, _, err := a.load(c)
	if err != nil {
		return err
	}
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return wire.BadRequest("invalid_query_parameter", "limit must be from 1 to 1000.", []any{map[string]string{"field": "limit", "code": "out_of_range"}})
		}
		limit = n
	}
	fs, err := a.st.Firings(c.Request().Context(), r.ID, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, wire.NewList(fs, "", ""))
}

func (a *API) record(c echo.Context, action string, r *alertrule.Rule) error {
	meta := map[string]any{"source_ip": c.RealIP()}
	if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
		meta["request_id"] = id
	}
	return a.rec.Record(c.Request().Context(), logstream.Change{Action: action, Metadata: meta,
		Targets: []event.Entity{{ID: r.ID, Type: "alert_rule"}, {ID: r.OrganizationID, Type: "organization"}}})
}

// View is a rule as the API shows it.
type View struct {
	Object string `json:"object"`
	alertrule.Rule
	// SigningSecret is shown once, in the answer to the create that generated it.
	SigningSecret string `json:"signing_secret,omitempty"`
	CreatedAt     string `json:"created_at"`
	UpdatedAt     string `json:"updated_at"`
}

func view(r *alertrule.Rule) *View {
	return &View{Object: "alert_rule", Rule: *r, CreatedAt: event.FormatTime(r.CreatedAt), UpdatedAt: event.FormatTime(r.UpdatedAt)}
}
