package wire

import (
	"context"
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
)

// Actor types of a Caller, as the self-audit records name them.
const (
	ActorAPIKey     = "api_key"     // a request with an API key
	ActorViewerLink = "viewer_link" // the viewer portal, with a link's token
	ActorOperator   = "operator"    // the `logbook keys` command
)

// Caller is who makes a request: the key it presents (its scopes and organizations), and where it
// comes from. Auth (API keys) and the viewer portal (viewer links) attach one to the request's
// context.
type Caller struct {
	// Key is what the caller may do; nil for an operator's command, which checks nothing.
	Key *apikey.Key
	// ActorType and Name are how the self-audit records name the caller: "api_key" and the key's
	// name, "viewer_link" and "viewer:<org>", "operator" and the user running the command.
	ActorType string
	Name      string
	// IP is the request's source address (behind a proxy: from X-Forwarded-For, see NewServer).
	IP        string
	UserAgent string
	RequestID string
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller ctx carries, if any.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// SetCaller attaches cl to the request's context, with the request's address, user agent and id,
// so that it also reaches code the handler calls with c.Request().Context().
func SetCaller(c echo.Context, cl Caller) {
	r := c.Request()
	cl.IP = c.RealIP()
	cl.UserAgent = r.UserAgent()
	cl.RequestID = c.Response().Header().Get(echo.HeaderXRequestID)
	c.SetRequest(r.WithContext(WithCaller(r.Context(), cl)))
}

// Need lets a request through only when its caller's key has scope s (keys without scopes have
// every scope; admin implies the others), else answers 403 insufficient_scope. Register it on every
// route behind Auth: g.POST(path, handler, wire.Need(apikey.ScopeEventsWrite)). A request without
// a caller is not restricted here: routes outside Auth have their own credential (a signature, a
// viewer token), and authentication is Auth's job.
func Need(s apikey.Scope) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if cl, ok := CallerFrom(c.Request().Context()); ok && cl.Key != nil && !cl.Key.Allows(s) {
				return Forbidden("insufficient_scope", fmt.Sprintf("This API key does not have the %s scope.", s))
			}
			return next(c)
		}
	}
}

// AllowOrg answers 403 organization_not_allowed unless the request's caller may act for org: a key
// limited to organizations only for its own, the self-audit organization only an admin key. Call
// it wherever a request names an organization (path, query or body).
func AllowOrg(ctx context.Context, org string) error {
	if cl, ok := CallerFrom(ctx); ok && cl.Key != nil && !cl.Key.MayName(org) {
		return Forbidden("organization_not_allowed", fmt.Sprintf("This API key may not act for organization '%s'.", org))
	}
	return nil
}

// AllowEnvironment answers 403 organization_not_allowed unless the request's caller may change
// what applies to every organization (environment schemas): a key limited to organizations may not.
func AllowEnvironment(ctx context.Context) error {
	if cl, ok := CallerFrom(ctx); ok && cl.Key != nil && !cl.Key.EnvironmentWide() {
		return Forbidden("organization_not_allowed", "This API key is limited to organizations; this change applies to all of them.")
	}
	return nil
}
