// Package portal is the viewer web page: an organization's audit trail for its own IT admins,
// served under /portal/ by the query API (and by the single process). An operator creates a
// short-lived, read-only link for one organization with the API key (POST /portal/links); the page
// behind the link lists, filters and opens that organization's events and exports them as CSV,
// calling /portal/api/… with the link's token instead of the API key. The token can read nothing
// but its organization's events and exports, and stops working at its expiry.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: no build step, no
// third-party code, a strict Content-Security-Policy.
package portal

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Config tunes the portal.
type Config struct {
	// PublicURL is the scheme://host[:port] viewer links start with (LOGBOOK_PUBLIC_URL). Empty: the
	// scheme and Host of the request that creates the link.
	PublicURL string
	// LinkTTL is how long a viewer link works (LOGBOOK_PORTAL_LINK_TTL). Default 1 h, at most 24 h.
	LinkTTL time.Duration
	// RateLimit is the token bucket of each viewer link: every /portal/api request costs a token
	// (LOGBOOK_PORTAL_RATE_LIMIT per second, bursts of LOGBOOK_PORTAL_RATE_BURST). Default 10 per
	// second, bursts of 50: a person scrolling loads a page of 100 events per request.
	RateLimit wire.RateLimitConfig
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{LinkTTL: time.Hour, RateLimit: wire.RateLimitConfig{Rate: 10, Burst: 50, MaxKeys: 10_000}}
}

// MaxLinkTTL is the longest LinkTTL accepted.
const MaxLinkTTL = 24 * time.Hour

// ConfigFromEnv reads LOGBOOK_PUBLIC_URL and LOGBOOK_PORTAL_LINK_TTL; problems are recorded in env.
func ConfigFromEnv(env *config.Env) Config {
	c := DefaultConfig()
	c.PublicURL = env.BaseURL("LOGBOOK_PUBLIC_URL", "")
	if c.LinkTTL = env.Duration("LOGBOOK_PORTAL_LINK_TTL", c.LinkTTL); c.LinkTTL > MaxLinkTTL {
		env.Fail("LOGBOOK_PORTAL_LINK_TTL", c.LinkTTL.String(), "must be at most 24h")
		c.LinkTTL = MaxLinkTTL
	}
	c.RateLimit.Rate = float64(env.Int("LOGBOOK_PORTAL_RATE_LIMIT", int64(c.RateLimit.Rate), 0, 1_000_000))
	c.RateLimit.Burst = int(env.Int("LOGBOOK_PORTAL_RATE_BURST", int64(c.RateLimit.Burst), 1, 1_000_000))
	return c
}

// routes is an API that adds its routes to a group: the search API (*search.API) and the export
// API (*export.Service).
type routes interface {
	Register(g *echo.Group)
}

// Portal serves the viewer page and its API. Safe for concurrent use.
type Portal struct {
	links   *Links
	search  routes
	exports *exportProxy  // nil when this process serves no exports
	limiter *wire.Limiter // per viewer link
	also    []routes      // more read-only viewer routes (the organization's log streams)
	cfg     Config
	log     *slog.Logger
	audit   auditor
}

// auditor records administrative changes before they are made: a *selfaudit.Recorder. Its error
// is the answer to give (a 503).
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// UseAudit makes every viewer link recorded in the self-audit organization before it is issued.
// Without it, nothing is recorded (selfaudit.Discard).
func (p *Portal) UseAudit(a auditor) { p.audit = a }

// New returns a Portal whose viewers read through search (registered again under /portal/api,
// behind viewer tokens) and export through exports (nil: the export button answers that exports
// are unavailable).
func New(links *Links, search, exports routes, cfg Config, log *slog.Logger) *Portal {
	p := &Portal{links: links, search: search, limiter: wire.NewLimiter(cfg.RateLimit), cfg: cfg, log: log, audit: selfaudit.Discard}
	if exports != nil {
		p.exports = newExportProxy(exports, log)
	}
	return p
}

// Also adds read-only routes to the viewer API (under /portal/api, behind viewer tokens, the
// organization pinned to the token's as for the events): the organization's log streams.
func (p *Portal) Also(r routes) *Portal {
	p.also = append(p.also, r)
	return p
}

//go:embed assets
var assets embed.FS

var deniedPage = template.Must(template.ParseFS(assets, "assets/denied.html"))

// Register adds POST /portal/links to keyed (the API-key group) and, on e without the API key,
// the page (GET /portal/), its static files (/portal/assets/…) and the viewer API (/portal/api/…,
// viewer token required).
func (p *Portal) Register(e *echo.Echo, keyed *echo.Group) {
	keyed.POST("/portal/links", p.createLink, wire.Need(apikey.ScopeEventsRead))
	e.GET("/portal", func(c echo.Context) error {
		return c.Redirect(http.StatusFound, "/portal/?"+c.Request().URL.RawQuery)
	})
	e.GET("/portal/", p.page)
	e.GET("/portal/assets/*", p.asset)
	v := e.Group("/portal/api", p.viewerAuth, wire.RateLimitBy(p.limiter, func(c echo.Context) string {
		id, _ := c.Get(viewerLinkContext).(string)
		return id
	}))
	v.GET("/session", p.session)
	v.POST("/exports", p.createExport)
	v.GET("/exports/:id", p.getExport)
	p.search.Register(v) // GET /portal/api/audit_logs/events[/:id]
	for _, r := range p.also {
		r.Register(v) // GET /portal/api/log_streams
	}
}

type linkRequest struct {
	OrganizationID string `json:"organization_id"`
}

type linkResponse struct {
	Object    string `json:"object"`
	URL       string `json:"url"`
	ExpiresAt string `json:"expires_at"`
}

// createLink answers POST /portal/links {"organization_id": …} with a viewer link for it.
func (p *Portal) createLink(c echo.Context) error {
	body, err := wire.ReadBody(c, 4<<10)
	if err != nil {
		return err
	}
	var req linkRequest
	if err := strictJSON(body, &req); err != nil {
		return wire.BadRequest("invalid_request_body", "The body must be {\"organization_id\": …}.", nil)
	}
	if !event.ValidOrgID(req.OrganizationID) {
		return wire.Unprocessable("unprocessable_entity", "Validation failed.", []map[string]string{{
			"field": "organization_id", "code": "organization_id is required: 1 to 64 of letters, digits, '_' and '-'",
		}})
	}
	ctx := c.Request().Context()
	if err := wire.AllowOrg(ctx, req.OrganizationID); err != nil {
		return err
	}
	expires := p.links.now().Add(p.cfg.LinkTTL).Truncate(time.Second)
	// On record before it is issued (pkg/selfaudit): no record, no link.
	if err := p.audit.Record(ctx, selfaudit.Entry{
		Action:   selfaudit.ViewerLinkIssued,
		Targets:  []event.Entity{{ID: req.OrganizationID, Type: selfaudit.TargetOrganization}},
		Metadata: map[string]any{"expires_at": event.FormatTime(expires)},
	}); err != nil {
		return err
	}
	token := p.links.Issue(req.OrganizationID, expires)
	return c.JSON(http.StatusCreated, linkResponse{
		Object:    "portal_link",
		URL:       p.baseURL(c) + "/portal/?" + url.Values{"token": {token}}.Encode(),
		ExpiresAt: event.FormatTime(expires),
	})
}

func (p *Portal) baseURL(c echo.Context) string {
	if p.cfg.PublicURL != "" {
		return p.cfg.PublicURL
	}
	return c.Scheme() + "://" + c.Request().Host
}

// viewerContext names the echo context value holding the viewer's organization, and
// viewerLinkContext the one naming the viewer link (a digest of its token), for rate limiting.
const (
	viewerContext     = "logbook.viewer_org"
	viewerLinkContext = "logbook.viewer_link"
)

// viewerAuth admits requests carrying a valid viewer token ("Authorization: Bearer <token>") to
// the viewer API, pinned to the token's organization: an organization_id in the query must be the
// token's (else 403), and when absent it is set to it. Only reads pass, besides creating exports.
func (p *Portal) viewerAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, _ := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
		token = strings.TrimSpace(token)
		org, _, err := p.links.Verify(token)
		if err != nil {
			return tokenError(err)
		}
		sum := sha256.Sum256([]byte(token))
		c.Set(viewerLinkContext, hex.EncodeToString(sum[:16]))
		q := c.QueryParams() // echo's cached copy, which handlers read
		if got, ok := q["organization_id"]; ok && (len(got) != 1 || got[0] != org) {
			return wire.Forbidden("forbidden", "This viewer link is for another organization.")
		}
		q.Set("organization_id", org)
		c.Request().URL.RawQuery = q.Encode()
		m := c.Request().Method
		if m != http.MethodGet && m != http.MethodHead && c.Path() != "/portal/api/exports" {
			return &wire.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "Viewer links are read-only."}
		}
		c.Set(viewerContext, org)
		// The viewer is a caller that reads this one organization: the search and export routes
		// check it as they check an API key, and the self-audit records name it.
		wire.SetCaller(c, wire.Caller{
			Key:       &apikey.Key{Name: "viewer:" + org, Scopes: []apikey.Scope{apikey.ScopeEventsRead}, Organizations: []string{org}},
			ActorType: wire.ActorViewerLink,
			Name:      "viewer:" + org,
		})
		return next(c)
	}
}

func tokenError(err error) *wire.Error {
	e := &wire.Error{Status: http.StatusUnauthorized, Code: "invalid_viewer_link", Message: "This viewer link is not valid."}
	if errors.Is(err, ErrExpired) {
		e.Code, e.Message = "viewer_link_expired", "This viewer link has expired; ask for a new one."
	}
	return e
}

type sessionJSON struct {
	OrganizationID string `json:"organization_id"`
	ExpiresAt      string `json:"expires_at"`
	Exports        bool   `json:"exports"`
}

func (p *Portal) session(c echo.Context) error {
	token, _ := strings.CutPrefix(c.Request().Header.Get(echo.HeaderAuthorization), "Bearer ")
	org, expires, err := p.links.Verify(strings.TrimSpace(token))
	if err != nil {
		return tokenError(err)
	}
	return c.JSON(http.StatusOK, sessionJSON{OrganizationID: org, ExpiresAt: event.FormatTime(expires), Exports: p.exports != nil})
}

// Security headers of every portal response: scripts and styles only from /portal/assets, no
// framing, no referrer (the page's address holds the token).
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "+
		"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
}

// page serves the viewer page for a valid link, and a 401 or 403 page without any data otherwise.
func (p *Portal) page(c echo.Context) error {
	h := c.Response().Header()
	pageHeaders(h)
	h.Set("Cache-Control", "no-store")
	org, _, err := p.links.Verify(c.QueryParam("token"))
	switch {
	case err != nil:
		e := tokenError(err)
		return p.denied(c, e.Status, e.Message)
	case c.QueryParam("organization_id") != "" && c.QueryParam("organization_id") != org:
		return p.denied(c, http.StatusForbidden, "This viewer link is for another organization.")
	}
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		return fmt.Errorf("failed to read the portal page: %w", err)
	}
	return c.HTMLBlob(http.StatusOK, page)
}

func (p *Portal) denied(c echo.Context, status int, msg string) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(status)
	return deniedPage.Execute(c.Response(), struct {
		Status  int
		Title   string
		Message string
	}{status, http.StatusText(status), msg})
}

// asset serves the page's static files; they hold no data, so no token is needed.
func (p *Portal) asset(c echo.Context) error {
	name := c.Param("*")
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	dot := strings.LastIndexByte(name, '.')
	if strings.Contains(name, "/") || dot < 0 || types[name[dot:]] == "" {
		return wire.NotFound("No such file.")
	}
	b, err := assets.ReadFile("assets/" + name)
	if err != nil {
		return wire.NotFound("No such file.")
	}
	pageHeaders(c.Response().Header())
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.Blob(http.StatusOK, types[name[dot:]], b)
}
