// Package apikeys manages API keys: the admin routes (GET and POST /admin/keys, DELETE
// /admin/keys/{name}, admin scope) and the `keys` command (list, create, revoke) of the single
// process and of the services. Every creation and revocation is recorded in the self-audit
// organization before it is made.
package apikeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

// MaxBodyBytes caps a create-key body.
const MaxBodyBytes = 16 << 10

// keyStore is the keys bucket: an *apikey.Store.
type keyStore interface {
	Get(ctx context.Context, name string) (*apikey.Key, error)
	Create(ctx context.Context, spec apikey.Spec, secret string) (*apikey.Key, error)
	List(ctx context.Context) ([]apikey.Listed, error)
	Revoke(ctx context.Context, name string) (*apikey.Key, error)
}

// auditor records administrative changes before they are made: a *selfaudit.Recorder. Its error
// is the answer to give (a 503).
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// local is this process's key checks: an *apikey.Verifier.
type local interface {
	Await(ctx context.Context, hash string, present bool) error
}

// Manager creates, lists and revokes keys, recording each change first. Safe for concurrent use.
type Manager struct {
	store keyStore
	audit auditor
	local local
	now   func() time.Time
}

// UseLocal makes Create and Revoke return once this process's own checks (v) accept the new key or
// refuse the revoked one (at most a second; other replicas follow through their watches), so a
// client that creates a key can use it at once against the same process.
func (m *Manager) UseLocal(v local) { m.local = v }

func (m *Manager) await(ctx context.Context, hash string, present bool) {
	if m.local == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = m.local.Await(ctx, hash, present) // late is still correct: the watch delivers it
}

// New returns a Manager over store, recording changes with audit.
func New(store keyStore, audit auditor) *Manager {
	return &Manager{store: store, audit: audit, now: time.Now}
}

// Created is a new key: its record and, shown this once, the key.
type Created struct {
	Key    *apikey.Key
	Secret string
}

// Create makes a key from spec: checked (a *apikey.FieldError), not taken (apikey.ErrExists),
// recorded, stored.
func (m *Manager) Create(ctx context.Context, spec apikey.Spec) (*Created, error) {
	scopes, err := spec.Check()
	if err != nil {
		return nil, err
	}
	if _, err := m.store.Get(ctx, spec.Name); err == nil {
		return nil, apikey.ErrExists
	} else if !errors.Is(err, apikey.ErrNotFound) {
		return nil, err
	}
	secret, err := apikey.Generate()
	if err != nil {
		return nil, err
	}
	meta := map[string]any{"key_prefix": secret[:apikey.PrefixLen], "scopes": scopeText(scopes)}
	if len(spec.Organizations) > 0 {
		meta["organizations"] = truncate(strings.Join(spec.Organizations, ","), 500)
	}
	if err := m.audit.Record(ctx, selfaudit.Entry{
		Action:   selfaudit.KeyCreated,
		Targets:  []event.Entity{{ID: spec.Name, Type: selfaudit.TargetAPIKey}},
		Metadata: meta,
	}); err != nil {
		return nil, err
	}
	k, err := m.store.Create(ctx, spec, secret)
	if err != nil {
		return nil, err
	}
	m.await(ctx, k.Hash, true)
	return &Created{Key: k, Secret: secret}, nil
}

// Revoke revokes the key called name (apikey.ErrNotFound when there is none), recorded first.
func (m *Manager) Revoke(ctx context.Context, name string) (*apikey.Key, time.Time, error) {
	k, err := m.store.Get(ctx, name)
	if err != nil {
		return nil, time.Time{}, err
	}
	if err := m.audit.Record(ctx, selfaudit.Entry{
		Action:   selfaudit.KeyRevoked,
		Targets:  []event.Entity{{ID: k.Name, Type: selfaudit.TargetAPIKey}},
		Metadata: map[string]any{"key_prefix": k.Prefix, "source": k.Source, "scopes": scopeText(k.Scopes)},
	}); err != nil {
		return nil, time.Time{}, err
	}
	k, err = m.store.Revoke(ctx, name)
	if err != nil {
		return nil, time.Time{}, err
	}
	m.await(ctx, k.Hash, false)
	return k, m.now().UTC(), nil
}

// List returns every key, oldest first.
func (m *Manager) List(ctx context.Context) ([]apikey.Listed, error) { return m.store.List(ctx) }

func scopeText(s []apikey.Scope) string {
	if len(s) == 0 {
		return "all"
	}
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = string(v)
	}
	return strings.Join(parts, ",")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// API serves the admin routes.
type API struct {
	m   *Manager
	log *slog.Logger
}

// NewAPI returns the admin routes over m.
func NewAPI(m *Manager, log *slog.Logger) *API { return &API{m: m, log: log} }

// Register adds the routes to g (which applies authentication); they need the admin scope.
func (a *API) Register(g *echo.Group) {
	admin := wire.Need(apikey.ScopeAdmin)
	g.GET("/admin/keys", a.list, admin)
	g.POST("/admin/keys", a.create, admin)
	g.DELETE("/admin/keys/:name", a.revoke, admin)
}

// keyJSON is the api_key object.
type keyJSON struct {
	Object        string   `json:"object"`
	Name          string   `json:"name"`
	Prefix        string   `json:"prefix"`
	Scopes        []string `json:"scopes"`
	Organizations []string `json:"organizations"`
	Source        string   `json:"source"`
	CreatedAt     string   `json:"created_at"`
	LastUsedAt    *string  `json:"last_used_at"`
	RevokedAt     string   `json:"revoked_at,omitempty"`
	Key           string   `json:"key,omitempty"`
}

func toJSON(k *apikey.Key, lastUsed time.Time) keyJSON {
	out := keyJSON{Object: "api_key", Name: k.Name, Prefix: k.Prefix, Scopes: []string{}, Organizations: []string{},
		Source: k.Source, CreatedAt: event.FormatTime(k.CreatedAt)}
	for _, s := range k.Scopes {
		out.Scopes = append(out.Scopes, string(s))
	}
	out.Organizations = append(out.Organizations, k.Organizations...)
	if !lastUsed.IsZero() {
		t := event.FormatTime(lastUsed)
		out.LastUsedAt = &t
	}
	return out
}

func (a *API) list(c echo.Context) error {
	keys, err := a.m.List(c.Request().Context())
	if err != nil {
		return a.unavailable(err)
	}
	data := make([]keyJSON, len(keys))
	for i := range keys {
		data[i] = toJSON(&keys[i].Key, keys[i].LastUsed)
	}
	return c.JSON(http.StatusOK, wire.NewList(data, "", ""))
}

func (a *API) create(c echo.Context) error {
	body, err := wire.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	spec, err := apikey.ParseSpec(body)
	if err != nil {
		return a.specError(err)
	}
	k, err := a.m.Create(c.Request().Context(), *spec)
	if err != nil {
		return a.specError(err)
	}
	out := toJSON(k.Key, time.Time{})
	out.Key = k.Secret
	return c.JSON(http.StatusCreated, out)
}

func (a *API) revoke(c echo.Context) error {
	name, err := wire.PathParam(c, "name")
	if err != nil || !apikey.ValidName(name) {
		return wire.NotFound("API key not found.")
	}
	k, at, err := a.m.Revoke(c.Request().Context(), name)
	if errors.Is(err, apikey.ErrNotFound) {
		return wire.NotFound(fmt.Sprintf("API key not found: '%s'.", name))
	}
	if err != nil {
		return a.unavailable(err)
	}
	out := toJSON(k, time.Time{})
	out.RevokedAt = event.FormatTime(at)
	return c.JSON(http.StatusOK, out)
}

// specError maps a create error to the envelope.
func (a *API) specError(err error) error {
	var fe *apikey.FieldError
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return we
	case errors.Is(err, apikey.ErrMalformed):
		return wire.BadRequest("invalid_request_body", "The body must be one JSON object.", nil)
	case errors.As(err, &fe):
		return wire.Unprocessable("invalid_api_key", "Validation failed.", []*apikey.FieldError{fe})
	case errors.Is(err, apikey.ErrExists):
		return wire.Conflict("api_key_exists", "An API key with this name exists; revoke it first or choose another name.")
	}
	return a.unavailable(err)
}

// unavailable answers 503 for a failure of the keys bucket (logged here: the answer says nothing
// of it), or passes on an answer already made (the self-audit record's 503).
func (a *API) unavailable(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	a.log.Error("api keys unavailable", "err", err)
	return wire.Unavailable("API keys are unavailable right now; retry shortly.", 1)
}
