package wire

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/logbookhq/logbook/pkg/config"
)

// RateLimitConfig is a token bucket per key: Rate tokens per second on average, bursts of up to
// Burst. A request costs one token; a request that carries several events (bulk ingest) costs one
// per event (see Charge). A Rate of 0 turns limiting off.
type RateLimitConfig struct {
	Rate  float64
	Burst int
	// MaxKeys bounds how many keys' buckets are kept; idle buckets are dropped first. Default 10,000.
	MaxKeys int
}

// DefaultRateLimit is the limit per API key and process: 2,000 events or requests per second,
// bursts of 10,000 (ten full bulk requests). That is about half of what one process ingests
// event by event on two cores, so one key cannot take a process for itself; operators change it
// with LOGBOOK_RATE_LIMIT and LOGBOOK_RATE_BURST (a history import wants more).
func DefaultRateLimit() RateLimitConfig {
	return RateLimitConfig{Rate: 2_000, Burst: 10_000, MaxKeys: 10_000}
}

// RateLimitFromEnv reads LOGBOOK_RATE_LIMIT (tokens per second per API key, 0 = off) and
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
	return l.AllowN(key, 1)
}

// AllowN takes n tokens from key's bucket at once, or none. When they are not there it returns
// false and how many whole seconds to wait (at least 1); n above the burst never passes (see
// Burst).
func (l *Limiter) AllowN(key string, n int) (ok bool, retryAfter int) {
	if l.cfg.Rate <= 0 || n <= 0 {
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
	r := b.lim.ReserveN(now, n)
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

// Burst returns the largest number of tokens one request may take.
func (l *Limiter) Burst() int { return l.cfg.Burst }

// RateLimit answers 429 rate_limit_exceeded with Retry-After when the request's API key has used
// its tokens. It runs after Auth, which names the key. The request costs one token; a handler
// takes more with Charge.
func RateLimit(l *Limiter) echo.MiddlewareFunc {
	return RateLimitBy(l, func(c echo.Context) string { id, _ := c.Get(keyIDContext).(string); return id })
}

// RateLimitBy is RateLimit with the bucket named by key (a viewer link, for the portal).
func RateLimitBy(l *Limiter, key func(echo.Context) string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := key(c)
			if ok, wait := l.Allow(id); !ok {
				return RateLimited(wait)
			}
			c.Set(chargeContext, &charge{l: l, key: id})
			return next(c)
		}
	}
}

const chargeContext = "logbook.rate_charge"

type charge struct {
	l   *Limiter
	key string
}

// Charge takes n more tokens for the request from the bucket RateLimit took its first from: a
// bulk request costs one token per event, so a handler calls Charge(c, events-1) once it knows
// the count and before doing the work. It returns the 429 to answer when the tokens are not
// there, or a 413 when n is more than a burst holds (the request can never pass). Without rate
// limiting on the route it does nothing.
func Charge(c echo.Context, n int) error {
	ch, _ := c.Get(chargeContext).(*charge)
	if ch == nil || n <= 0 || ch.l.cfg.Rate <= 0 {
		return nil
	}
	if n+1 > ch.l.cfg.Burst {
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
			Message: "The request costs " + strconv.Itoa(n+1) + " rate-limit tokens (one per event), more than the burst of " +
				strconv.Itoa(ch.l.cfg.Burst) + " (LOGBOOK_RATE_BURST); send fewer events per request."}
	}
	if ok, wait := ch.l.AllowN(ch.key, n); !ok {
		return RateLimited(wait)
	}
	return nil
}
