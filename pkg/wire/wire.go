// Package wire holds the WorkOS HTTP conventions every Logbook API shares: the error envelope
// each SDK maps to its typed exception, request ids, API-key authentication, JSON bodies with
// size limits, and the list shape.
package wire

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
)

// Error is an API error in the WorkOS envelope: {"message", "code", "errors"}. A 400 carries both
// code and errors, or the Node SDK raises a generic exception instead of BadRequestException.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
	Errors  any    `json:"errors,omitempty"`
	// RetryAfter, in seconds, is sent as the Retry-After header (429 and 503).
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Errorf-style constructors for the statuses the API uses.
func BadRequest(code, msg string, errs any) *Error {
	if errs == nil {
		errs = []any{}
	}
	return &Error{Status: http.StatusBadRequest, Code: code, Message: msg, Errors: errs}
}

// Unprocessable is a 422 with field errors.
func Unprocessable(code, msg string, errs any) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: code, Message: msg, Errors: errs}
}

// Conflict is a 409.
func Conflict(code, msg string) *Error {
	return &Error{Status: http.StatusConflict, Code: code, Message: msg}
}

// Forbidden is a 403.
func Forbidden(code, msg string) *Error {
	return &Error{Status: http.StatusForbidden, Code: code, Message: msg}
}

// NotFound is a 404.
func NotFound(msg string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

// Unavailable is a 503 with Retry-After.
func Unavailable(msg string, retryAfter int) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "service_unavailable", Message: msg, RetryAfter: retryAfter}
}

// Unauthorized is the 401 every SDK maps to its authentication error.
var Unauthorized = &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "Unauthorized"}

// ErrorHandler renders every error as the envelope: *Error as is, echo's own errors (404 route,
// 405, 413) mapped to the envelope, anything else as a logged 500 that reveals nothing.
func ErrorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var e *Error
		var he *echo.HTTPError
		switch {
		case errors.As(err, &e):
		case errors.As(err, &he):
			e = fromEcho(he)
		default:
			e = &Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"}
		}
		if e.Status >= 500 {
			log.Error("request failed", "method", c.Request().Method, "path", c.Path(),
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "status", e.Status, "err", err)
		}
		if e.RetryAfter > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(e.Status)
			return
		}
		_ = c.JSON(e.Status, e)
	}
}

func fromEcho(he *echo.HTTPError) *Error {
	msg := http.StatusText(he.Code)
	switch he.Code {
	case http.StatusNotFound:
		return &Error{Status: he.Code, Code: "not_found", Message: "The requested path could not be found."}
	case http.StatusMethodNotAllowed:
		return &Error{Status: he.Code, Code: "method_not_allowed", Message: msg}
	case http.StatusRequestEntityTooLarge:
		return &Error{Status: he.Code, Code: "payload_too_large", Message: "The request body is too large."}
	case http.StatusUnauthorized:
		return Unauthorized
	}
	if he.Code >= 500 {
		return &Error{Status: he.Code, Code: "server_error", Message: msg}
	}
	return &Error{Status: he.Code, Code: strings.ToLower(strings.ReplaceAll(msg, " ", "_")), Message: msg}
}

// RequestID sets X-Request-ID on every response: the caller's own if it sent a sane one, else a
// new random id.
func RequestID() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if id == "" || len(id) > 128 || strings.ContainsAny(id, "\r\n") {
				var b [12]byte
				_, _ = rand.Read(b[:])
				id = "req_" + hex.EncodeToString(b[:])
			}
			c.Response().Header().Set(echo.HeaderXRequestID, id)
			return next(c)
		}
	}
}

// KeyLookup finds the API key a request presents: an *apikey.Verifier.
type KeyLookup interface {
	Lookup(key string) (*apikey.Key, bool)
}

// keyIDContext names the echo context value holding an identity of the request's API key (a
// digest, never the key), set by Auth for RateLimit.
const keyIDContext = "logbook.key_id"

// KeyID returns the identity Auth gave the request's API key (a hex digest, never the key), or ""
// when the route is not behind Auth.
func KeyID(c echo.Context) string {
	id, _ := c.Get(keyIDContext).(string)
	return id
}

// Auth requires "Authorization: Bearer <key>" with a key keys knows, and attaches the caller (the
// key, the request's address, user agent and id) to the request's context for Need, AllowOrg and
// the self-audit records.
func Auth(keys KeyLookup) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			key, ok := strings.CutPrefix(h, "Bearer ")
			if !ok {
				return Unauthorized
			}
			k, ok := keys.Lookup(strings.TrimSpace(key))
			if !ok {
				return Unauthorized
			}
			c.Set(keyIDContext, k.Hash[:min(32, len(k.Hash))])
			SetCaller(c, Caller{Key: k, ActorType: ActorAPIKey, Name: k.Name})
			return next(c)
		}
	}
}

// ReadBody reads the request body up to limit bytes, answering 413 in the envelope past it.
func ReadBody(c echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadRequest("invalid_request", "Could not read the request body.", nil)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(limit)
	}
	return b, nil
}

func tooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
		Message: "The request body is larger than " + strconv.Itoa(int(limit)) + " bytes."}
}

// List is the WorkOS list envelope. Before and After are cursors, null when there is no such page.
type List[T any] struct {
	Object       string       `json:"object"`
	Data         []T          `json:"data"`
	ListMetadata ListMetadata `json:"list_metadata"`
}

// ListMetadata holds the paging cursors of a List.
type ListMetadata struct {
	Before *string `json:"before"`
	After  *string `json:"after"`
}

// NewList wraps data (never null on the wire) with its cursors ("" for none).
func NewList[T any](data []T, before, after string) List[T] {
	if data == nil {
		data = []T{}
	}
	l := List[T]{Object: "list", Data: data}
	if before != "" {
		l.ListMetadata.Before = &before
	}
	if after != "" {
		l.ListMetadata.After = &after
	}
	return l
}

// NewServer returns an echo instance with Logbook's conventions: the error envelope, X-Request-ID,
// panic recovery, and GET /healthz. Routes that need a key go on the group returned by Protected.
func NewServer(log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = ErrorHandler(log)
	// The request's address (self-audit records): X-Forwarded-For is believed only when the direct
	// peer is a loopback, link-local or private address (a proxy in front), else the peer itself.
	e.IPExtractor = echo.ExtractIPFromXFFHeader()
	e.Use(RequestID(), recoverPanics(log))
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	return e
}

func recoverPanics(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.Error("handler panicked", "path", c.Path(), "panic", r)
					err = &Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"}
				}
			}()
			return next(c)
		}
	}
}

// Serve runs e on addr with the timeouts of c until ctx is done, then shuts down gracefully
// (in-flight requests finish, up to 10 s).
func Serve(ctx context.Context, e *echo.Echo, addr string, c HTTPConfig) error {
	srv := NewHTTPServer(e, c)
	srv.Addr = addr
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// PathParam returns a path parameter decoded exactly once. Echo routes on the raw (escaped) path
// when the request has one, and then parameters arrive escaped; otherwise they arrive decoded
// already, and decoding again would turn a literal "%2E" into a dot.
func PathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}
