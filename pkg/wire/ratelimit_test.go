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

// A handler charges a request that carries several events one token per event: the bucket runs
// out by events, not requests, and a request costing more than a burst is a 413.
func TestChargeCountsEvents(t *testing.T) {
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	l := wire.NewLimiter(wire.RateLimitConfig{Rate: 1, Burst: 10, MaxKeys: 100})
	handler := func(c echo.Context) error {
		n, _ := strconv.Atoi(c.QueryParam("events"))
		if err := wire.Charge(c, n-1); err != nil {
			return err
		}
		return c.JSON(200, map[string]int{"events": n})
	}
	e.Group("", wire.Auth(anyKey{}), wire.RateLimit(l)).POST("/bulk", handler)
	e.POST("/free", handler) // no rate limit on the route: Charge does nothing
	post := func(path, key string, events int) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, fmt.Sprintf("%s?events=%d", path, events), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	require.Equal(t, 200, post("/bulk", "sk_a", 8).Code)
	r := post("/bulk", "sk_a", 8)
	require.Equal(t, http.StatusTooManyRequests, r.Code, "8 + 8 events exceed a burst of 10")
	assert.NotEmpty(t, r.Header().Get("Retry-After"))
	r = post("/bulk", "sk_b", 11)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Code)
	assert.Contains(t, r.Body.String(), "LOGBOOK_RATE_BURST")
	assert.Equal(t, 200, post("/bulk", "sk_b", 2).Code, "a refused charge took no tokens")
	assert.Equal(t, 200, post("/free", "", 50).Code)
}
