// Package search serves an organization's stored events: GET /audit_logs/events in the WorkOS list
// shape, newest first by default, with opaque cursors that stay correct while events arrive.
package search

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Paging limits.
const (
	DefaultLimit = 10
	MaxLimit     = 1000
)

type pager interface {
	Page(ctx context.Context, org string, older bool, from *store.Position, limit int) ([]store.Event, error)
}

// API serves the search routes. Safe for concurrent use.
type API struct {
	store pager
}

// New returns an API reading from s.
func New(s pager) *API { return &API{store: s} }

// Register adds the routes to g (which applies authentication).
func (a *API) Register(g *echo.Group) {
	g.GET("/audit_logs/events", a.list)
}

var listParams = []string{"organization_id", "limit", "before", "after", "order"}

type listRequest struct {
	org    string
	limit  int
	desc   bool
	before *cursor
	after  *cursor
}

func parseList(c echo.Context) (*listRequest, error) {
	q := c.QueryParams()
	for name, vals := range q {
		if !slices.Contains(listParams, name) {
			return nil, invalidParam(name, "is not a known parameter")
		}
		if len(vals) > 1 {
			return nil, invalidParam(name, "may be given only once")
		}
	}
	r := &listRequest{org: q.Get("organization_id"), limit: DefaultLimit, desc: true}
	if r.org == "" {
		return nil, invalidParam("organization_id", "is required")
	}
	if !event.ValidOrgID(r.org) {
		return nil, invalidParam("organization_id", "may contain only letters, digits, '_' and '-'")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return nil, invalidParam("limit", fmt.Sprintf("must be an integer from 1 to %d", MaxLimit))
		}
		r.limit = n
	}
	switch q.Get("order") {
	case "", "desc", "normal":
	case "asc":
		r.desc = false
	default:
		return nil, invalidParam("order", "must be asc or desc")
	}
	var err error
	if r.before, err = decodeCursor(q.Get("before"), r.org); err != nil {
		return nil, invalidParam("before", err.Error())
	}
	if r.after, err = decodeCursor(q.Get("after"), r.org); err != nil {
		return nil, invalidParam("after", err.Error())
	}
	if r.before != nil && r.after != nil {
		return nil, invalidParam("before", "cannot be combined with after")
	}
	return r, nil
}

func invalidParam(name, why string) error {
	return wire.BadRequest("invalid_query_parameter", fmt.Sprintf("The %s parameter %s.", name, why),
		[]map[string]string{{"field": name, "code": name + " " + why}})
}

// list pages through the organization's events. "after" continues in the list's order and
// "before" goes back; a page's cursors point at its own first and last events, so events that
// arrive meanwhile can only appear, never shift what is skipped or repeated.
func (a *API) list(c echo.Context) error {
	r, err := parseList(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// Walking "forward" follows the list's order: toward older events when newest come first.
	forward, from := true, r.after
	if r.before != nil {
		forward, from = false, r.before
	}
	older := forward == r.desc
	rows, err := a.store.Page(ctx, r.org, older, from.position(), r.limit+1)
	if err != nil {
		return err
	}
	more := len(rows) > r.limit
	if more {
		rows = rows[:r.limit]
	}
	if !forward {
		slices.Reverse(rows)
	}
	var before, after string
	if len(rows) > 0 {
		first, last := rows[0], rows[len(rows)-1]
		// A page has events before it if we came from there or more lie that way, and likewise after.
		if (forward && from != nil) || (!forward && more) {
			before = encodeCursor(r.org, first)
		}
		if (forward && more) || (!forward && from != nil) {
			after = encodeCursor(r.org, last)
		}
	}
	data := make([]json.RawMessage, len(rows))
	for i, e := range rows {
		data[i] = EventJSON(e)
	}
	return c.JSON(http.StatusOK, wire.NewList(data, before, after))
}

// EventJSON renders a stored event as the API's audit_log_event object: the event as accepted
// plus its id, organization and the time Logbook received it.
func EventJSON(e store.Event) json.RawMessage {
	head, _ := json.Marshal(struct {
		Object         string `json:"object"`
		ID             string `json:"id"`
		OrganizationID string `json:"organization_id"`
		CreatedAt      string `json:"created_at"`
	}{"audit_log_event", e.ID, e.OrganizationID, event.FormatTime(e.ReceivedAt)})
	if len(e.Event) < 2 || e.Event[0] != '{' {
		return head
	}
	out := make([]byte, 0, len(head)+len(e.Event))
	out = append(out, head[:len(head)-1]...)
	if len(e.Event) > 2 {
		out = append(out, ',')
	}
	return append(out, e.Event[1:]...)
}

// cursor is the position of an event in an organization's order. It is opaque to clients
// (base64 of JSON) and names its organization, so it cannot be replayed against another.
type cursor struct {
	Org string `json:"o"`
	At  int64  `json:"t"`
	ID  string `json:"i"`
}

func (c *cursor) position() *store.Position {
	if c == nil {
		return nil
	}
	return &store.Position{OccurredAt: time.UnixMilli(c.At).UTC(), ID: c.ID}
}

func encodeCursor(org string, e store.Event) string {
	b, _ := json.Marshal(cursor{Org: org, At: e.OccurredAt.UnixMilli(), ID: e.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, org string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var c cursor
	if err != nil || len(s) > 512 || json.Unmarshal(b, &c) != nil || c.ID == "" {
		return nil, fmt.Errorf("is not a cursor from this API")
	}
	if c.Org != org {
		return nil, fmt.Errorf("belongs to another organization's listing")
	}
	return &c, nil
}
