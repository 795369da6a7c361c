// Package search serves an organization's stored events: GET /audit_logs/events in the WorkOS list
// shape, newest first by default, with opaque cursors that stay correct while events arrive.
package search

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Paging limits.
const (
	DefaultLimit = 10
	MaxLimit     = 1000
)

type searcher interface {
	Search(ctx context.Context, f store.Filter, older bool, from *store.Position, limit int) ([]store.Event, error)
	GetWithin(ctx context.Context, org, id string, retentionDays uint16) (*store.Event, error)
}

// Retention answers an organization's current retention in days (0: none); a
// *retention.Policies. Events older than that are never served.
type Retention interface {
	Days(org string) uint16
}

// API serves the search routes. Safe for concurrent use.
type API struct {
	store     searcher
	retention Retention
	stored    pipeline // nil: a missing event is a 404 at once
}

// pipeline waits until everything acknowledged so far is stored: a *settle.Waiter.
type pipeline interface {
	WaitNow(ctx context.Context) error
}

// Read-your-writes for single events: an id minted within RecentID of now that is not found waits
// up to StoredWait for the pipeline to store what was acknowledged before the request, then is
// looked up again.
const (
	RecentID   = 10 * time.Minute
	StoredWait = 5 * time.Second
)

// New returns an API reading from s, hiding events past their organization's retention r.
func New(s searcher, r Retention) *API { return &API{store: s, retention: r} }

// ReadsOwnWrites makes GET /audit_logs/events/{id} of a recent id wait for the pipeline (through
// p) before it answers 404, so an event the gateway acknowledged is found. It returns a.
func (a *API) ReadsOwnWrites(p pipeline) *API {
	a.stored = p
	return a
}

// Register adds the routes to g (which applies authentication), each needing events:read.
func (a *API) Register(g *echo.Group) {
	read := wire.Need(apikey.ScopeEventsRead)
	g.GET("/audit_logs/events", a.list, read)
	g.GET("/audit_logs/events/:id", a.get, read)
}

// Filter parameters that may repeat (actions=a&actions=b); each value is an alternative.
var listFilters = map[string]func(f *store.Filter) *[]string{
	"actions":     func(f *store.Filter) *[]string { return &f.Actions },
	"actor_ids":   func(f *store.Filter) *[]string { return &f.ActorIDs },
	"actor_names": func(f *store.Filter) *[]string { return &f.ActorNames },
	"actor_types": func(f *store.Filter) *[]string { return &f.ActorTypes },
	"target_ids":  func(f *store.Filter) *[]string { return &f.TargetIDs },
	"targets":     func(f *store.Filter) *[]string { return &f.TargetTypes },
}

var listParams = []string{"organization_id", "limit", "before", "after", "order", "range_start", "range_end", "q"}

// Limits on filter values.
const (
	MaxFilterValues   = 100
	MaxFilterValueLen = 512
	MaxTextLen        = 200
)

type listRequest struct {
	filter store.Filter
	digest string // identifies the filter in cursors
	limit  int
	desc   bool
	before *cursor
	after  *cursor
}

func parseList(c echo.Context) (*listRequest, error) {
	q := c.QueryParams()
	r := &listRequest{limit: DefaultLimit, desc: true}
	for name, vals := range q {
		if field, ok := listFilters[name]; ok {
			if len(vals) > MaxFilterValues {
				return nil, invalidParam(name, fmt.Sprintf("may be given at most %d times", MaxFilterValues))
			}
			for _, v := range vals {
				if v == "" || len(v) > MaxFilterValueLen || !utf8.ValidString(v) {
					return nil, invalidParam(name, fmt.Sprintf("values must be 1 to %d bytes of UTF-8", MaxFilterValueLen))
				}
				if name == "actions" && strings.Contains(strings.TrimSuffix(v, "*"), "*") {
					return nil, invalidParam(name, "may use * only at the end, as a prefix match")
				}
			}
			*field(&r.filter) = vals
			continue
		}
		if !slices.Contains(listParams, name) {
			return nil, invalidParam(name, "is not a known parameter")
		}
		if len(vals) > 1 {
			return nil, invalidParam(name, "may be given only once")
		}
	}
	r.filter.Org = q.Get("organization_id")
	if r.filter.Org == "" {
		return nil, invalidParam("organization_id", "is required")
	}
	if !event.ValidOrgID(r.filter.Org) {
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
	for _, rt := range []struct {
		name string
		dst  *time.Time
	}{{"range_start", &r.filter.Start}, {"range_end", &r.filter.End}} {
		if s := q.Get(rt.name); s != "" {
			if *rt.dst, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return nil, invalidParam(rt.name, "must be an ISO 8601 date-time such as 2026-01-01T00:00:00Z")
			}
		}
	}
	if !r.filter.Start.IsZero() && !r.filter.End.IsZero() && !r.filter.Start.Before(r.filter.End) {
		return nil, invalidParam("range_start", "must be before range_end")
	}
	if r.filter.Text = q.Get("q"); len(r.filter.Text) > MaxTextLen || !utf8.ValidString(r.filter.Text) {
		return nil, invalidParam("q", fmt.Sprintf("must be at most %d bytes of UTF-8", MaxTextLen))
	}
	r.digest = filterDigest(&r.filter)
	if r.before, err = decodeCursor(q.Get("before"), r.filter.Org, r.digest); err != nil {
		return nil, invalidParam("before", err.Error())
	}
	if r.after, err = decodeCursor(q.Get("after"), r.filter.Org, r.digest); err != nil {
		return nil, invalidParam("after", err.Error())
	}
	if r.before != nil && r.after != nil {
		return nil, invalidParam("before", "cannot be combined with after")
	}
	return r, nil
}

// filterDigest names a filter (its organization aside) so a cursor can only continue the listing
// it came from.
func filterDigest(f *store.Filter) string {
	h := sha256.New()
	for _, vals := range [][]string{f.Actions, f.ActorIDs, f.ActorNames, f.ActorTypes, f.TargetIDs, f.TargetTypes} {
		sorted := slices.Sorted(slices.Values(vals))
		for _, v := range sorted {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
		h.Write([]byte{1})
	}
	fmt.Fprintf(h, "%d|%d|%s", f.Start.UnixMilli(), f.End.UnixMilli(), f.Text)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
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
	if err := wire.AllowOrg(c.Request().Context(), r.filter.Org); err != nil {
		return err
	}
	r.filter.RetentionDays = a.retention.Days(r.filter.Org)
	ctx := c.Request().Context()
	// Walking "forward" follows the list's order: toward older events when newest come first.
	forward, from := true, r.after
	if r.before != nil {
		forward, from = false, r.before
	}
	older := forward == r.desc
	rows, err := a.store.Search(ctx, r.filter, older, from.position(), r.limit+1)
	if err != nil {
		return QueryError(err)
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
			before = encodeCursor(r, first)
		}
		if (forward && more) || (!forward && from != nil) {
			after = encodeCursor(r, last)
		}
	}
	data := make([]json.RawMessage, len(rows))
	for i, e := range rows {
		data[i] = EventJSON(e)
	}
	return c.JSON(http.StatusOK, wire.NewList(data, before, after))
}

// get returns one event: GET /audit_logs/events/{id}?organization_id=…
func (a *API) get(c echo.Context) error {
	org := c.QueryParam("organization_id")
	if !event.ValidOrgID(org) {
		return invalidParam("organization_id", "is required and may contain only letters, digits, '_' and '-'")
	}
	for name := range c.QueryParams() {
		if name != "organization_id" {
			return invalidParam(name, "is not a known parameter")
		}
	}
	if err := wire.AllowOrg(c.Request().Context(), org); err != nil {
		return err
	}
	id, err := wire.PathParam(c, "id")
	if err != nil || id == "" || len(id) > 64 {
		return wire.NotFound("Audit Log Event not found.")
	}
	ctx := c.Request().Context()
	e, err := a.store.GetWithin(ctx, org, id, a.retention.Days(org))
	if errors.Is(err, store.ErrNotFound) && a.stored != nil && recent(id, time.Now()) {
		// Perhaps acknowledged moments ago and still on its way: wait for the pipeline to store
		// what it held at this request, then look again.
		wctx, cancel := context.WithTimeout(ctx, StoredWait)
		werr := a.stored.WaitNow(wctx)
		cancel()
		if werr == nil {
			e, err = a.store.GetWithin(ctx, org, id, a.retention.Days(org))
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return wire.NotFound(fmt.Sprintf("Audit Log Event not found: '%s'.", id))
	}
	if err != nil {
		return QueryError(err)
	}
	return c.JSON(http.StatusOK, EventJSON(*e))
}

// recent reports whether id is an event id (a ULID) minted within RecentID before now.
func recent(id string, now time.Time) bool {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return false
	}
	at := ulid.Time(u.Time())
	return at.After(now.Add(-RecentID)) && at.Before(now.Add(time.Minute))
}

// QueryError is the answer to a failed read: a read ClickHouse stopped at one of its limits
// (store.LimitError) is 503 query_timeout with Retry-After for the time limit, and 422
// query_too_expensive for the memory and rows limits, each naming the limit and its variable;
// anything else is returned unchanged (a 500).
func QueryError(err error) error {
	var le *store.LimitError
	if !errors.As(err, &le) {
		return err
	}
	const narrow = "narrow it (a shorter range_start/range_end, an actions or actor filter)"
	variable := "LOGBOOK_SEARCH_" + strings.ToUpper(le.Setting())
	switch le.Kind {
	case store.LimitTime:
		return &wire.Error{Status: http.StatusServiceUnavailable, Code: "query_timeout", RetryAfter: 5,
			Message: fmt.Sprintf("The search ran longer than its limit of %s (%s); %s or retry later.", le.Describe(), variable, narrow)}
	case store.LimitMemory:
		return wire.Unprocessable("query_too_expensive",
			fmt.Sprintf("The search needs more memory than its limit of %s (%s); %s.", le.Describe(), variable, narrow), []any{})
	default:
		return wire.Unprocessable("query_too_expensive",
			fmt.Sprintf("The search would read more rows than its limit of %s (%s); %s.", le.Describe(), variable, narrow), []any{})
	}
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
	body := e.JSON()
	out := make([]byte, 0, len(head)+len(body))
	out = append(out, head[:len(head)-1]...)
	out = append(out, ',')
	return append(out, body[1:]...)
}

// cursor is the position of an event in a listing. It is opaque to clients (base64 of JSON) and
// names its organization and filter, so it cannot be replayed against another listing.
type cursor struct {
	Org    string `json:"o"`
	Filter string `json:"f"`
	At     int64  `json:"t"`
	ID     string `json:"i"`
}

func (c *cursor) position() *store.Position {
	if c == nil {
		return nil
	}
	return &store.Position{OccurredAt: time.UnixMilli(c.At).UTC(), ID: c.ID}
}

func encodeCursor(r *listRequest, e store.Event) string {
	b, _ := json.Marshal(cursor{Org: r.filter.Org, Filter: r.digest, At: e.OccurredAt.UnixMilli(), ID: e.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, org, digest string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(s) > 512 || json.Unmarshal(b, &c) != nil || c.ID == "" {
		return nil, fmt.Errorf("is not a cursor from this API")
	}
	if c.Org != org {
		return nil, fmt.Errorf("belongs to another organization's listing")
	}
	if c.Filter != digest {
		return nil, fmt.Errorf("belongs to a listing with other filters")
	}
	return &c, nil
}
