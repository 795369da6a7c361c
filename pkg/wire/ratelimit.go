package wire

import (
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/logbookhq/logbook/pkg/config"
)

// RateLimitConfig is the per-key token bucket: Rate requests per second on average, bursts of up
// to Burst. A Rate of 0 turns limiting off.
type RateLimitConfig struct {
	Rate  float64
	Burst int
	// MaxKeys bounds how many keys' buckets are kept; idle buckets are dropped first. Default 10,000.
	MaxKeys int
}

// DefaultRateLimit is generous on purpose (a benchmark on one key is not throttled); operators
// lower it with LOGBOOK_RATE_LIMIT and LOGBOOK_RATE_BURST.
func DefaultRateLimit() RateLimitConfig {
	return RateLimitConfig{Rate: 10_000, Burst: 20_000, MaxKeys: 10_000}
}

// RateLimitFromEnv reads LOGBOOK_RATE_LIMIT (requests per second per API key, 0 = off) and
// LOGBOOK_RATE_BURST over DefaultRateLimit.
func RateLimitFromEnv(env *config.Env) RateLimitConfig {
	c := DefaultRateLimit()
	c.Rate = float64(env.Int("LOGBOOK_RATE_LIMIT", int64(c.Rate), 0, 1_000_000_000))
	c.Burst = int(env.Int("LOGBOOK_RATE_BURST", int64(c.Burst), 1, 1_000_000_000))
	return c
}

// RateLimited is the 429 every SDK maps to its rate-limit error; Retry-After says when to retry.
func RateLimited(retryAfter int) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limit_exceeded", Message: "Too many requests.", RetryAfter: retryAfter}
}

// Limiter holds one token bucket per API key. A limited key never slows another. Safe for
// concurrent use.
type Limiter struct {
	cfg     RateLimitConfig
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter returns a Limiter with cfg.
func NewLimiter(cfg RateLimitConfig) *Limiter {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultRateLimit().MaxKeys
	}
	return &Limiter{cfg: cfg, buckets: map[string]*bucket{}, now: time.Now}
}

// Allow takes a token from key's bucket. When there is none it returns false and how many whole
// seconds to wait (at least 1).
func (l *Limiter) Allow(key string) (ok bool, retryAfter int) {
	if l.cfg.Rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.cfg.MaxKeys {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.cfg.Rate), l.cfg.Burst)}
		l.buckets[key] = b
	}
	b.seen = now
	l.mu.Unlock()
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, 1
	}
	d := r.DelayFrom(now)
	if d == 0 {
		return true, 0
	}
	r.CancelAt(now)
	return false, max(1, int(math.Ceil(d.Seconds())))
}

// evict drops buckets idle long enough to be full again (forgetting them changes nothing), and if
// that frees nothing, the least recently seen half. Called with mu held.
func (l *Limiter) evict(now time.Time) {
	full := time.Duration(float64(l.cfg.Burst)/l.cfg.Rate*float64(time.Second)) + time.Second
	for k, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) < l.cfg.MaxKeys {
		return
	}
	seen := make([]time.Time, 0, len(l.buckets))
	for _, b := range l.buckets {
		seen = append(seen, b.seen)
	}
	slices.SortFunc(seen, time.Time.Compare)
	cut := seen[len(seen)/2]
	for k, b := range l.buckets {
		if !b.seen.After(cut) {
			delete(l.buckets, k)
		}
	}
}

// Len returns how many keys have a bucket.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// RateLimit answers 429 rate_limit_exceeded with Retry-After when the request's API key has used
// its tokens. It runs after Auth, which names the key.
func RateLimit(l *Limiter) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id, _ := c.Get(keyIDContext).(string)
			if ok, wait := l.Allow(id); !ok {
				return RateLimited(wait)
			}
			return next(c)
		}
	}
}
