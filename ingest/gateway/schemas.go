package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Paging of the schema and action lists (WorkOS list paging).
const (
	DefaultListLimit = 10
	MaxListLimit     = 100
)

// registerSchemas adds the schema routes: the environment's schemas (WorkOS paths) and an
// organization's own schemas, which take precedence over the environment's for its events.
func (gw *Gateway) registerSchemas(g *echo.Group) {
	read, write := wire.Need(apikey.ScopeSchemasRead), wire.Need(apikey.ScopeSchemasWrite)
	g.POST("/audit_logs/actions/:action/schemas", gw.createSchema, write)
	g.GET("/audit_logs/actions/:action/schemas", gw.listSchemas, read)
	g.GET("/audit_logs/actions", gw.listActions, read)
	g.POST("/organizations/:org/audit_logs/actions/:action/schemas", gw.createSchema, write)
	g.GET("/organizations/:org/audit_logs/actions/:action/schemas", gw.listSchemas, read)
	admin := wire.Need(apikey.ScopeAdmin)
	g.POST("/audit_logs/actions/:action/schemas/:version/retire", gw.retireSchema, admin)
	g.POST("/organizations/:org/audit_logs/actions/:action/schemas/:version/retire", gw.retireSchema, admin)
}

// scope reads the optional :org and the :action path parameters.
func scope(c echo.Context) (org, action string, err error) {
	if slices.Contains(c.ParamNames(), "org") {
		raw := c.Param("org")
		org, err = wire.PathParam(c, "org")
		if err != nil || !event.ValidOrgID(org) {
			return "", "", wire.NotFound(fmt.Sprintf("Organization not found: '%s'.", truncate(raw, 80)))
		}
	}
	action, err = wire.PathParam(c, "action")
	if err != nil || !validate.ValidAction(action) {
		return "", "", wire.Unprocessable("invalid_action", "The action name must be dot-separated words of letters, digits, '_' and '-'.",
			[]validate.FieldError{{Field: "action", Code: "action must be dot-separated words of letters, digits, '_' and '-'"}})
	}
	return org, action, nil
}

func (gw *Gateway) createSchema(c echo.Context) error {
	org, action, err := scope(c)
	if err != nil {
		return err
	}
	if err := allowSchema(c.Request().Context(), org, action); err != nil {
		return err
	}
	body, err := wire.ReadBody(c, schema.MaxDefinitionBytes)
	if err != nil {
		return err
	}
	// JSON that says two things (a duplicate name) or holds invalid UTF-8 is a 400; a body that
	// is not JSON at all stays an invalid schema (422), below.
	if json.Valid(body) {
		if err := validate.CheckJSON(body); err != nil {
			return wire.BadRequest("invalid_request_body", err.Error(), nil)
		}
	}
	def, err := schema.ParseDefinition(body)
	if err != nil {
		return wire.Unprocessable("invalid_schema", err.Error(), []validate.FieldError{{Field: "schema", Code: err.Error()}})
	}
	// On record before it exists (pkg/selfaudit): no record, no schema.
	if err := gw.audit.Record(c.Request().Context(), schemaRegistered(org, action, len(gw.schemas.Versions(org, action))+1, body)); err != nil {
		return err
	}
	s, err := gw.schemas.CreateFor(c.Request().Context(), org, action, def)
	if err != nil {
		return fmt.Errorf("failed to create schema for %s: %w", action, err)
	}
	return c.JSON(http.StatusCreated, SchemaJSON(s))
}

// MaxRetireBodyBytes caps a retire request's body.
const MaxRetireBodyBytes = 4 << 10

// retireSchema withdraws one version from new events (Logbook's own route; WorkOS has none): an
// operator's answer to a version that should not have been registered. The body names the reason;
// the caller's key is recorded as who. Retiring a retired version answers its first retirement.
func (gw *Gateway) retireSchema(c echo.Context) error {
	org, action, err := scope(c)
	if err != nil {
		if e, ok := err.(*wire.Error); ok && e.Status == http.StatusUnprocessableEntity {
			return wire.NotFound(fmt.Sprintf("Audit Log Action not found: '%s'.", truncate(c.Param("action"), 80)))
		}
		return err
	}
	version, err := strconv.Atoi(c.Param("version"))
	if err != nil || version < 1 || version > validate.MaxVersion {
		return wire.NotFound(fmt.Sprintf("Audit Log Schema not found: '%s' version '%s'.", action, truncate(c.Param("version"), 20)))
	}
	body, err := wire.ReadBody(c, MaxRetireBodyBytes)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return wire.BadRequest("invalid_request_body", "The body must be a JSON object: {\"reason\": \"...\"}.", nil)
		}
		return retireInvalid(err.Error())
	}
	if req.Reason == "" || len(req.Reason) > schema.MaxRetiredReasonLen {
		return retireInvalid(fmt.Sprintf("reason is required: why the version is retired (at most %d characters)", schema.MaxRetiredReasonLen))
	}
	ctx := c.Request().Context()
	if org != "" {
		if err := wire.AllowOrg(ctx, org); err != nil {
			return err
		}
	}
	if version > len(gw.schemas.Versions(org, action)) {
		return wire.NotFound(fmt.Sprintf("Audit Log Schema not found: '%s' version %d.", action, version))
	}
	// On record before it changes (pkg/selfaudit): no record, no retirement.
	if err := gw.audit.Record(ctx, SchemaRetiredEntry(org, action, version, req.Reason)); err != nil {
		return err
	}
	s, _, err := gw.schemas.Retire(ctx, org, action, version, gw.actor(c), req.Reason)
	if errors.Is(err, schema.ErrUnknownVersion) {
		return wire.NotFound(fmt.Sprintf("Audit Log Schema not found: '%s' version %d.", action, version))
	}
	if err != nil {
		return fmt.Errorf("failed to retire schema %s v%d: %w", action, version, err)
	}
	return c.JSON(http.StatusOK, SchemaJSON(s))
}

func retireInvalid(why string) error {
	return wire.Unprocessable("invalid_retirement", "The retirement could not be processed: "+why+".",
		[]validate.FieldError{{Field: "reason", Code: why}})
}

// listSchemas lists an action's schema versions, newest first by default.
func (gw *Gateway) listSchemas(c echo.Context) error {
	org, action, err := scope(c)
	if err != nil {
		if e, ok := err.(*wire.Error); ok && e.Status == http.StatusUnprocessableEntity {
			return wire.NotFound(fmt.Sprintf("Audit Log Action not found: '%s'.", truncate(c.Param("action"), 80)))
		}
		return err
	}
	if org != "" {
		if err := wire.AllowOrg(c.Request().Context(), org); err != nil {
			return err
		}
	}
	versions := gw.schemas.Versions(org, action)
	if len(versions) == 0 {
		return wire.NotFound(fmt.Sprintf("Audit Log Action not found: '%s'.", action))
	}
	p, err := parsePage(c, "als_")
	if err != nil {
		return err
	}
	if p.desc {
		slices.Reverse(versions)
	}
	items, before, after, err := paginate(p, versions, func(s schema.Schema) string { return strconv.Itoa(s.Version) })
	if err != nil {
		return err
	}
	data := make([]map[string]any, len(items))
	for i := range items {
		data[i] = SchemaJSON(&items[i])
	}
	return c.JSON(http.StatusOK, wire.NewList(data, before, after))
}

// listActions lists the actions that have an environment schema, each with its latest schema;
// newest action (by its first schema) first by default.
func (gw *Gateway) listActions(c echo.Context) error {
	p, err := parsePage(c, "ala_")
	if err != nil {
		return err
	}
	type action struct {
		name           string
		first, current schema.Schema
	}
	var actions []action
	for _, name := range gw.schemas.Actions() {
		vs := gw.schemas.Versions("", name)
		if len(vs) == 0 {
			continue
		}
		current := vs[len(vs)-1] // the newest version in force, else the newest
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].Retired == nil {
				current = vs[i]
				break
			}
		}
		actions = append(actions, action{name: name, first: vs[0], current: current})
	}
	slices.SortStableFunc(actions, func(a, b action) int { return a.first.CreatedAt.Compare(b.first.CreatedAt) })
	if p.desc {
		slices.Reverse(actions)
	}
	items, before, after, err := paginate(p, actions, func(a action) string { return a.name })
	if err != nil {
		return err
	}
	data := make([]map[string]any, len(items))
	for i, a := range items {
		data[i] = map[string]any{
			"object":     "audit_log_action",
			"name":       a.name,
			"schema":     SchemaJSON(&a.current),
			"created_at": event.FormatTime(a.first.CreatedAt),
			"updated_at": event.FormatTime(a.current.CreatedAt),
		}
	}
	return c.JSON(http.StatusOK, wire.NewList(data, before, after))
}

// SchemaJSON is the audit_log_schema object of the WorkOS API, plus Logbook's "retired" flag
// (with retired_at, retired_by and retired_reason once retired).
func SchemaJSON(s *schema.Schema) map[string]any {
	out := map[string]any{
		"object":     "audit_log_schema",
		"version":    s.Version,
		"targets":    s.Targets,
		"created_at": event.FormatTime(s.CreatedAt),
		"retired":    s.Retired != nil,
	}
	if s.Retired != nil {
		out["retired_at"] = event.FormatTime(s.Retired.At)
		out["retired_by"] = s.Retired.By
		out["retired_reason"] = s.Retired.Reason
	}
	if s.Targets == nil {
		out["targets"] = []schema.Target{}
	}
	if s.Actor != nil {
		out["actor"] = s.Actor
	}
	if len(s.Metadata) > 0 {
		out["metadata"] = s.Metadata
	}
	return out
}

// pageRequest is a parsed WorkOS list query: limit (1–100, default 10), order (asc, desc or normal;
// default desc, normal means desc) and at most one of the before/after cursors.
type pageRequest struct {
	limit  int
	desc   bool
	before string
	after  string
	prefix string
}

func parsePage(c echo.Context, prefix string) (*pageRequest, error) {
	p := &pageRequest{limit: DefaultListLimit, desc: true, prefix: prefix}
	for name, vals := range c.QueryParams() {
		if !slices.Contains([]string{"limit", "order", "before", "after"}, name) {
			return nil, badParam(name, "is not a known parameter")
		}
		if len(vals) > 1 {
			return nil, badParam(name, "may be given only once")
		}
	}
	q := c.QueryParams()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return nil, badParam("limit", fmt.Sprintf("must be an integer from 1 to %d", MaxListLimit))
		}
		p.limit = n
	}
	switch q.Get("order") {
	case "", "desc", "normal":
	case "asc":
		p.desc = false
	default:
		return nil, badParam("order", "must be asc, desc or normal")
	}
	var err error
	if p.before, err = decodeListCursor(q.Get("before"), prefix); err != nil {
		return nil, badParam("before", err.Error())
	}
	if p.after, err = decodeListCursor(q.Get("after"), prefix); err != nil {
		return nil, badParam("after", err.Error())
	}
	if p.before != "" && p.after != "" {
		return nil, badParam("before", "cannot be combined with after")
	}
	return p, nil
}

// paginate cuts one page out of items (already in list order), after or before the item whose key
// a cursor names. The last page in a direction has an empty cursor for it (null on the wire).
func paginate[T any](p *pageRequest, items []T, key func(T) string) (page []T, before, after string, err error) {
	lo, hi := 0, min(p.limit, len(items))
	if p.after != "" || p.before != "" {
		i := slices.IndexFunc(items, func(t T) bool { return key(t) == p.after || key(t) == p.before })
		if i < 0 {
			return nil, "", "", badParam("after", "does not name an item of this list")
		}
		if p.after != "" {
			lo, hi = i+1, min(i+1+p.limit, len(items))
		} else {
			lo, hi = max(0, i-p.limit), i
		}
	}
	page = items[lo:hi]
	if len(page) > 0 {
		if lo > 0 {
			before = encodeListCursor(p.prefix, key(page[0]))
		}
		if hi < len(items) {
			after = encodeListCursor(p.prefix, key(page[len(page)-1]))
		}
	}
	return page, before, after, nil
}

func encodeListCursor(prefix, key string) string {
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(key))
}

func decodeListCursor(s, prefix string) (string, error) {
	if s == "" {
		return "", nil
	}
	rest, ok := strings.CutPrefix(s, prefix)
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if !ok || err != nil || len(b) == 0 || len(s) > 512 {
		return "", fmt.Errorf("is not a cursor from this list")
	}
	return string(b), nil
}

func badParam(name, why string) error {
	return wire.BadRequest("invalid_query_parameter", fmt.Sprintf("The %s parameter %s.", name, why),
		[]map[string]string{{"field": name, "code": name + " " + why}})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
