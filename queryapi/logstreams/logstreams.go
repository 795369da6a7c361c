// Package logstreams serves the log-stream management API (Logbook's own, docs/api.md): create,
// list, get, update, pause, resume, replay and delete a stream that sends every valid event of an
// organization (or of all of them) to a destination. Secrets are sealed at rest and never
// returned; every change is recorded in Logbook's own audit trail before it is made. Delivery is
// the writer's (writer/logstream); this package only reads the status it reports.
package logstreams

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

// NewEventID mints the id of an event Logbook records about itself (a ULID, as the gateway's).
func NewEventID(t time.Time) string {
	return ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String()
}

// Open prepares the log streams bucket (replicas copies) and returns its Store.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*logstream.Store, error) {
	if err := logstream.EnsureBucket(ctx, js, replicas); err != nil {
		return nil, err
	}
	return logstream.Open(ctx, js)
}

// Access is how the wiring restricts callers (the API keys' scopes and organizations). The zero
// Access restricts nothing.
type Access struct {
	// Read and Write wrap the reading and the changing routes (scope checks such as
	// wire.Need(apikey.ScopeAdmin): a stream sends an organization's whole trail elsewhere).
	Read, Write echo.MiddlewareFunc
	// Org answers an error (a *wire.Error) unless the caller may act for org; "" is an
	// environment-wide stream (every organization).
	Org func(ctx context.Context, org string) error
}

// API serves /log_streams. Safe for concurrent use.
type API struct {
	js     jetstream.JetStream
	st     *logstream.Store
	rec    logstream.Recorder
	access Access
	now    func() time.Time
}

// UseAccess restricts callers with acc; call it before Register.
func (a *API) UseAccess(acc Access) { a.access = acc }

// allowed answers the Access error for org, nil when there is no Access.Org.
func (a *API) allowed(ctx context.Context, org string) error {
	if a.access.Org == nil {
		return nil
	}
	return a.access.Org(ctx, org)
}

func routeGuards(m echo.MiddlewareFunc) []echo.MiddlewareFunc {
	if m == nil {
		return nil
	}
	return []echo.MiddlewareFunc{m}
}

// New returns the API on st, recording changes with rec.
func New(js jetstream.JetStream, st *logstream.Store, rec logstream.Recorder) *API {
	return &API{js: js, st: st, rec: rec, now: time.Now}
}

// Register adds the routes to g (behind the API key).
func (a *API) Register(g *echo.Group) {
	r, w := routeGuards(a.access.Read), routeGuards(a.access.Write)
	g.POST("/log_streams", a.create, w...)
	g.GET("/log_streams", a.list, r...)
	g.GET("/log_streams/:id", a.get, r...)
	g.PATCH("/log_streams/:id", a.update, w...)
	g.POST("/log_streams/:id/pause", a.setState(logstream.StatePaused, logstream.ActionPaused), w...)
	g.POST("/log_streams/:id/resume", a.setState(logstream.StateActive, logstream.ActionResumed), w...)
	g.POST("/log_streams/:id/replay", a.replay, w...)
	g.DELETE("/log_streams/:id", a.delete, w...)
}

const maxBody = 64 << 10

// destinationBody is a destination as sent: its public fields and its secrets.
type destinationBody struct {
	logstream.Destination
	SigningSecret   string            `json:"signing_secret,omitempty"`
	Token           string            `json:"token,omitempty"`
	APIKey          string            `json:"api_key,omitempty"`
	SecretAccessKey string            `json:"secret_access_key,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
}

func (d *destinationBody) secrets() logstream.Secrets {
	return logstream.Secrets{SigningSecret: d.SigningSecret, Token: d.Token, APIKey: d.APIKey,
		SecretAccessKey: d.SecretAccessKey, Headers: d.Headers}
}

type createBody struct {
	OrganizationID *string          `json:"organization_id"`
	Name           string           `json:"name"`
	State          string           `json:"state"`
	Destination    *destinationBody `json:"destination"`
	Batch          logstream.Batch  `json:"batch"`
	// Start is "now" (the default: events accepted from now on) or an RFC 3339 time to replay from.
	Start string `json:"start"`
}

func decode(c echo.Context, v any) error {
	b, err := wire.ReadBody(c, maxBody)
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
		return wire.Unprocessable("invalid_log_stream", "Validation failed.", ve.Errors)
	}
	return err
}

func (a *API) create(c echo.Context) error {
	var body createBody
	if err := decode(c, &body); err != nil {
		return err
	}
	if body.Destination == nil {
		return wire.Unprocessable("invalid_log_stream", "Validation failed.", []logstream.FieldError{{Field: "destination", Code: "is required"}})
	}
	now := a.now().UTC().Truncate(time.Millisecond)
	s := logstream.Stream{
		ID: logstream.IDPrefix + ulid.Make().String(), Name: body.Name, State: body.State,
		Destination: body.Destination.Destination, Batch: body.Batch, CreatedAt: now, UpdatedAt: now,
	}
	if body.OrganizationID != nil {
		if *body.OrganizationID == "" {
			return wire.Unprocessable("invalid_log_stream", "Validation failed.", []logstream.FieldError{{Field: "organization_id", Code: "must be an organization id, or absent for every organization"}})
		}
		s.OrganizationID = *body.OrganizationID
	}
	if s.State == "" {
		s.State = logstream.StateActive
	}
	sec := body.Destination.secrets()
	generated := ""
	if s.Destination.Type == logstream.TypeHTTP && sec.SigningSecret == "" {
		sec.SigningSecret = logstream.NewSigningSecret()
		generated = sec.SigningSecret
	}
	start := logstream.Start{}
	if body.Start != "" && body.Start != "now" {
		t, err := time.Parse(time.RFC3339Nano, body.Start)
		if err != nil {
			return wire.Unprocessable("invalid_log_stream", "Validation failed.", []logstream.FieldError{{Field: "start", Code: "must be now or an RFC 3339 time"}})
		}
		start.Time = t
	}
	if err := logstream.Validate(&s, &sec); err != nil {
		return invalid(err)
	}
	if err := a.allowed(c.Request().Context(), s.OrganizationID); err != nil {
		return err
	}
	if err := a.record(c, logstream.ActionCreated, &s, map[string]any{"destination_type": s.Destination.Type}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := a.st.Create(ctx, &s, &sec, logstream.Start{}); err != nil {
		return err
	}
	if !start.Time.IsZero() {
		if err := a.st.RequestReplay(ctx, s.ID, logstream.Replay{From: start.Time.UTC(), RequestedAt: now}); err != nil {
			return err
		}
	}
	out, err := a.view(ctx, &logstream.Record{Stream: s})
	if err != nil {
		return err
	}
	out.SigningSecret = generated
	return c.JSON(http.StatusCreated, out)
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
		if (org != "" && r.OrganizationID != org) || a.allowed(c.Request().Context(), r.OrganizationID) != nil {
			continue // another organization's, or one the caller may not see
		}
		v, err := a.view(c.Request().Context(), r)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, wire.NewList(out, "", ""))
}

func (a *API) load(c echo.Context) (*logstream.Record, uint64, error) {
	id, err := wire.PathParam(c, "id")
	if err != nil {
		return nil, 0, wire.NotFound("Log stream not found.")
	}
	r, rev, err := a.st.Get(c.Request().Context(), id)
	if errors.Is(err, logstream.ErrNotFound) {
		return nil, 0, wire.NotFound("Log stream not found: '" + id + "'.")
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
	v, err := a.view(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

type updateBody struct {
	Name        *string          `json:"name"`
	Destination *destinationBody `json:"destination"`
	Batch       *logstream.Batch `json:"batch"`
}

// update changes the name, the destination or the batch settings. A destination of the same type
// keeps each secret the body leaves out (so a URL can change without resending the token).
func (a *API) update(c echo.Context) error {
	var body updateBody
	if err := decode(c, &body); err != nil {
		return err
	}
	r, rev, err := a.load(c)
	if err != nil {
		return err
	}
	sec, err := a.st.Open(r)
	if err != nil {
		return err
	}
	s := r.Stream
	if body.Name != nil {
		s.Name = *body.Name
	}
	if body.Batch != nil {
		s.Batch = *body.Batch
	}
	if body.Destination != nil {
		next := body.Destination.secrets()
		if body.Destination.Type == s.Destination.Type {
			keep(&next.SigningSecret, sec.SigningSecret)
			keep(&next.Token, sec.Token)
			keep(&next.APIKey, sec.APIKey)
			keep(&next.SecretAccessKey, sec.SecretAccessKey)
			if next.Headers == nil {
				next.Headers = sec.Headers
			}
		}
		s.Destination, sec = body.Destination.Destination, &next
		if s.Destination.Type == logstream.TypeHTTP && sec.SigningSecret == "" {
			return wire.Unprocessable("invalid_log_stream", "Validation failed.", []logstream.FieldError{{Field: "destination.signing_secret", Code: "is required when the type changes to http"}})
		}
	}
	if err := logstream.Validate(&s, sec); err != nil {
		return invalid(err)
	}
	s.UpdatedAt = a.now().UTC().Truncate(time.Millisecond)
	return a.save(c, &s, sec, rev, logstream.ActionUpdated, nil)
}

func keep(field *string, old string) {
	if *field == "" {
		*field = old
	}
}

// save records the change, stores s and answers it.
func (a *API) save(c echo.Context, s *logstream.Stream, sec *logstream.Secrets, rev uint64, action string, meta map[string]any) error {
	if err := a.record(c, action, s, meta); err != nil {
		return err
	}
	ctx := c.Request().Context()
	err := a.st.Update(ctx, s, sec, rev)
	if errors.Is(err, logstream.ErrConflict) {
		return wire.Conflict("conflict", "The log stream changed at the same time; read it again and retry.")
	}
	if err != nil {
		return err
	}
	v, err := a.view(ctx, &logstream.Record{Stream: *s})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (a *API) setState(state, action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		r, rev, err := a.load(c)
		if err != nil {
			return err
		}
		if r.State == state {
			v, err := a.view(c.Request().Context(), r)
			if err != nil {
				return err
			}
			return c.JSON(http.StatusOK, v)
		}
		sec, err := a.st.Open(r)
		if err != nil {
			return err
		}
		s := r.Stream
		s.State, s.UpdatedAt = state, a.now().UTC().Truncate(time.Millisecond)
		return a.save(c, &s, sec, rev, action, nil)
	}
}

func (a *API) replay(c echo.Context) error {
	var body struct {
		From string `json:"from"`
	}
	if err := decode(c, &body); err != nil {
		return err
	}
	from, err := time.Parse(time.RFC3339Nano, body.From)
	if err != nil || from.After(a.now()) {
		return wire.Unprocessable("invalid_log_stream", "Validation failed.", []logstream.FieldError{{Field: "from", Code: "must be an RFC 3339 time in the past"}})
	}
	r, _, err := a.load(c)
	if err != nil {
		return err
	}
	if err := a.record(c, logstream.ActionReplayed, &r.Stream, map[string]any{"from": event.FormatTime(from)}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := a.st.RequestReplay(ctx, r.ID, logstream.Replay{From: from.UTC(), RequestedAt: a.now().UTC()}); err != nil {
		return err
	}
	v, err := a.view(ctx, r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, v)
}

func (a *API) delete(c echo.Context) error {
	r, _, err := a.load(c)
	if err != nil {
		return err
	}
	if err := a.record(c, logstream.ActionDeleted, &r.Stream, nil); err != nil {
		return err
	}
	if err := a.st.Delete(c.Request().Context(), r.ID); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "log_stream", "id": r.ID, "deleted": true})
}

// record puts a change to s on record.
func (a *API) record(c echo.Context, action string, s *logstream.Stream, meta map[string]any) error {
	targets := []event.Entity{{ID: s.ID, Type: "log_stream", Name: truncate(s.Name, 512)}}
	if s.OrganizationID != "" {
		targets = append(targets, event.Entity{ID: s.OrganizationID, Type: "organization"})
	}
	if meta == nil {
		meta = map[string]any{}
	}
	if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
		meta["request_id"] = id
	}
	meta["source_ip"] = truncate(c.RealIP(), 200)
	return a.rec.Record(c.Request().Context(), logstream.Change{Action: action, Targets: targets, Metadata: meta})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// View is a stream as the API shows it: its configuration without secrets, and its delivery state.
type View struct {
	Object         string                `json:"object"`
	ID             string                `json:"id"`
	OrganizationID *string               `json:"organization_id"`
	Name           string                `json:"name"`
	State          string                `json:"state"`
	Destination    logstream.Destination `json:"destination"`
	Batch          logstream.Batch       `json:"batch"`
	// SigningSecret is shown once, in the answer to the create that generated it.
	SigningSecret string `json:"signing_secret,omitempty"`
	Health        string `json:"health"`
	Mode          string `json:"mode"`
	Released      bool   `json:"released"`
	// Paused is true once the delivery worker has seen the pause (state says what was asked).
	Paused bool `json:"paused"`
	Lag    struct {
		Events  *uint64 `json:"events"`
		Seconds float64 `json:"seconds"`
	} `json:"lag"`
	Delivered      uint64            `json:"delivered"`
	FailedAttempts uint64            `json:"failed_attempts"`
	LastError      *string           `json:"last_error"`
	LastErrorAt    *string           `json:"last_error_at"`
	FailingSince   *string           `json:"failing_since"`
	LastDelivered  *string           `json:"last_delivered_at"`
	LastEventID    *string           `json:"last_event_id"`
	PendingReplay  *logstream.Replay `json:"pending_replay"`
	CreatedAt      string            `json:"created_at"`
	UpdatedAt      string            `json:"updated_at"`
}

func (a *API) view(ctx context.Context, r *logstream.Record) (*View, error) {
	st, _, err := a.st.Status(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	return Render(ctx, a.js, a.st, r, st, a.now())
}

// Render is the View of stream r with status st (the portal shows the same).
func Render(ctx context.Context, js jetstream.JetStream, st *logstream.Store, r *logstream.Record, status logstream.Status, now time.Time) (*View, error) {
	v := &View{Object: "log_stream", ID: r.ID, Name: r.Name, State: r.State, Destination: r.Destination,
		Batch: r.Batch.WithDefaults(r.Destination.Type), Health: status.Health, Mode: status.Mode, Released: status.Released, Paused: status.Paused,
		Delivered: status.Delivered, FailedAttempts: status.FailedAttempts,
		CreatedAt: event.FormatTime(r.CreatedAt), UpdatedAt: event.FormatTime(r.UpdatedAt)}
	if r.OrganizationID != "" {
		org := r.OrganizationID
		v.OrganizationID = &org
	}
	if v.Health == "" {
		v.Health, v.Mode = logstream.HealthOK, logstream.ModeLive
	}
	if lag, err := logstream.ReadLag(ctx, js, &r.Stream, status); err == nil {
		if lag.EventsKnown {
			n := lag.Events
			v.Lag.Events = &n
		}
		v.Lag.Seconds = lag.Seconds(now)
	}
	str := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	at := func(t *time.Time) *string {
		if t == nil {
			return nil
		}
		return str(event.FormatTime(*t))
	}
	v.LastError, v.LastErrorAt, v.FailingSince = str(status.LastError), at(status.LastErrorAt), at(status.FailingSince)
	v.LastDelivered, v.LastEventID = at(status.LastDeliveredAt), str(status.LastEventID)
	if st != nil {
		if p, _, err := st.PendingReplay(ctx, r.ID); err == nil {
			v.PendingReplay = p
		}
	}
	return v, nil
}

// Viewer serves an organization's log streams read-only for the viewer portal: GET /log_streams
// with the organization pinned by the portal (organization_id is required), each stream's name,
// destination type, state, health and lag, without the destination's address or any secret.
type Viewer struct{ api *API }

// Viewer returns the portal's read-only view of a.
func (a *API) Viewer() Viewer { return Viewer{api: a} }

// Register adds GET /log_streams to g (the portal's viewer group).
func (v Viewer) Register(g *echo.Group) { g.GET("/log_streams", v.list) }

// ViewerStream is what the portal shows of a stream.
type ViewerStream struct {
	Object          string  `json:"object"`
	ID              string  `json:"id"`
	Name            string  `json:"name"`
	Type            string  `json:"type"`
	State           string  `json:"state"`
	Health          string  `json:"health"`
	Mode            string  `json:"mode"`
	LagSeconds      float64 `json:"lag_seconds"`
	LastDeliveredAt *string `json:"last_delivered_at"`
	LastErrorAt     *string `json:"last_error_at"`
	FailingSince    *string `json:"failing_since"`
}

func (v Viewer) list(c echo.Context) error {
	org := c.QueryParam("organization_id")
	if !event.ValidOrgID(org) {
		return wire.Forbidden("forbidden", "An organization is required.")
	}
	ctx := c.Request().Context()
	recs, err := v.api.st.List(ctx)
	if err != nil {
		return err
	}
	out := []ViewerStream{}
	for _, r := range recs {
		if r.OrganizationID != org {
			continue
		}
		full, err := v.api.view(ctx, r)
		if err != nil {
			return err
		}
		out = append(out, ViewerStream{Object: "log_stream", ID: r.ID, Name: r.Name, Type: r.Destination.Type, State: r.State,
			Health: full.Health, Mode: full.Mode, LagSeconds: full.Lag.Seconds, LastDeliveredAt: full.LastDelivered,
			LastErrorAt: full.LastErrorAt, FailingSince: full.FailingSince})
	}
	return c.JSON(http.StatusOK, wire.NewList(out, "", ""))
}

// KeyAccess is the Access of API-key callers: streams and alert rules send an organization's
// whole trail elsewhere, so reading and changing them needs the admin scope, and a key limited to
// organizations may only name its own (never an environment-wide stream).
func KeyAccess() Access {
	admin := wire.Need(apikey.ScopeAdmin)
	return Access{Read: admin, Write: admin, Org: func(ctx context.Context, org string) error {
		if org == "" {
			return wire.AllowEnvironment(ctx)
		}
		return wire.AllowOrg(ctx, org)
	}}
}

// auditor records an administrative change before it is made: a *selfaudit.Recorder.
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// Audited is a logstream.Recorder that records changes through a (the self-audit recorder: the
// caller's key name and address come from the request).
func Audited(a auditor) logstream.Recorder { return auditedRecorder{a} }

type auditedRecorder struct{ a auditor }

func (r auditedRecorder) Record(ctx context.Context, c logstream.Change) error {
	return r.a.Record(ctx, selfaudit.Entry{Action: c.Action, Targets: c.Targets, Metadata: c.Metadata})
}
