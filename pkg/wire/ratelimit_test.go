package wire_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/wire"
)

type anyKey struct{}

func (anyKey) Lookup(k string) (*apikey.Key, bool) {
	return &apikey.Key{Name: "any", Hash: apikey.Hash(k)}, k != ""
}

// A key over its limit gets 429 rate_limit_exceeded with Retry-After; another key is unaffected.
func TestRateLimitPerKey(t *testing.T) {
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	l := wire.NewLimiter(wire.RateLimitConfig{Rate: 1, Burst: 5, MaxKeys: 100})
	g := e.Group("", wire.Auth(anyKey{}), wire.RateLimit(l))
	g.GET("/x", func(c echo.Context) error { return c.JSON(200, map[string]bool{"ok": true}) })
	get := func(key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < 5; i++ {
		require.Equal(t, 200, get("sk_a").Code)
	}
	r := get("sk_a")
	require.Equal(t, http.StatusTooManyRequests, r.Code)
	assert.JSONEq(t, `{"message":"Too many requests.","code":"rate_limit_exceeded"}`, r.Body.String())
	wait, err := strconv.Atoi(r.Header().Get("Retry-After"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, wait, 1)
	assert.NotEmpty(t, r.Header().Get("X-Request-ID"))
	assert.Equal(t, 200, get("sk_b").Code, "another key keeps its own bucket")
}

func TestRateLimiterStaysBounded(t *testing.T) {
	l := wire.NewLimiter(wire.RateLimitConfig{Rate: 100, Burst: 100, MaxKeys: 1000})
	for i := 0; i < 10_000; i++ {
		ok, _ := l.Allow(fmt.Sprint("key-", i))
		require.True(t, ok)
	}
	assert.LessOrEqual(t, l.Len(), 1000)
}

func TestRateLimitOff(t *testing.T) {
	l := wire.NewLimiter(wire.RateLimitConfig{Rate: 0, Burst: 1})
	for i := 0; i < 100; i++ {
		ok, _ := l.Allow("k")
		require.True(t, ok)
	}
}
