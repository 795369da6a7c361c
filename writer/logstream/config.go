// Package logstream is the delivery side of log streams: a Manager, run by every writer replica
// (and the single process), holds a lease per stream in the logbook_log_streams bucket and runs one
// shipper for each stream it holds. A shipper reads its stream's durable consumer of LOGBOOK_VALID,
// one batch at a time, sends it to the destination (package destination), and acknowledges the
// batch only once the destination accepted it: at least once, in the valid stream's order.
//
// Failures are retried with exponential backoff and jitter (a Retry-After first), with InProgress
// sent so JetStream does not redeliver the batch meanwhile. A stream that keeps failing is marked
// failing after FailingAfter. A stream whose oldest undelivered event is older than HoldFor, or
// that holds back a valid stream past ReleaseFill of its byte cap, is released: its position is
// recorded as a received time and its consumer deleted, so the valid stream's trimmer is no longer
// held by it and intake never stops for one destination; once the destination answers again the
// stream catches up from ClickHouse in received order and hands over to a new consumer
// (docs/design.md, Log streams).
package logstream

import (
	"errors"
	"time"

	"github.com/logbookhq/logbook/pkg/config"
)

// Config tunes delivery.
type Config struct {
	// RetryInitial is the first retry's wait; each failure doubles it up to RetryMax, with jitter
	// (a wait is drawn from the upper half of the current interval). Defaults 1 s and 5 min.
	RetryInitial, RetryMax time.Duration
	// RequestTimeout bounds one delivery attempt. Default 30 s.
	RequestTimeout time.Duration
	// FailingAfter marks a stream failing once it has failed without a success for this long.
	// Default 1 h.
	FailingAfter time.Duration
	// HoldFor releases a stream whose oldest undelivered event is older than this: the valid
	// stream stops holding events for it, and it catches up from ClickHouse later. Default 6 h.
	HoldFor time.Duration
	// ReleaseFill releases the stream holding the valid stream back, if its lag is at least
	// ReleaseMinLag, once the valid stream is this full (a fraction of its byte cap), so a
	// destination that is down never makes intake answer 503. Default 0.8, and 5 min.
	ReleaseFill   float64
	ReleaseMinLag time.Duration
	// LeaseTTL is how long a replica holds a stream without renewing; another replica takes the
	// stream over after it. Default 15 s.
	LeaseTTL time.Duration
	// ClockSkew bounds how far apart the gateways' clocks (received times) and the NATS servers'
	// clocks (stream times) may be; hand-overs between ClickHouse and the valid stream overlap by
	// it. Default 1 min.
	ClockSkew time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		RetryInitial: time.Second, RetryMax: 5 * time.Minute, RequestTimeout: 30 * time.Second,
		FailingAfter: time.Hour, HoldFor: 6 * time.Hour, ReleaseFill: 0.8, ReleaseMinLag: 5 * time.Minute,
		LeaseTTL: 15 * time.Second, ClockSkew: time.Minute,
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial:
		return errors.New("log stream retry: initial must be positive and at most the maximum")
	case c.RequestTimeout <= 0 || c.FailingAfter <= 0 || c.HoldFor <= 0 || c.LeaseTTL < time.Second:
		return errors.New("log stream timeouts must be positive (lease at least 1 s)")
	case c.ReleaseFill <= 0 || c.ReleaseFill > 1:
		return errors.New("log stream release fill must be in (0, 1]")
	}
	return nil
}

// ConfigFromEnv reads LOGBOOK_LOG_STREAM_RETRY_MAX, _FAILING_AFTER, _HOLD and _RELEASE_FILL_PERCENT
// over the defaults.
func ConfigFromEnv(env *config.Env) Config {
	c := DefaultConfig()
	c.RetryMax = env.Duration("LOGBOOK_LOG_STREAM_RETRY_MAX", c.RetryMax)
	c.FailingAfter = env.Duration("LOGBOOK_LOG_STREAM_FAILING_AFTER", c.FailingAfter)
	c.HoldFor = env.Duration("LOGBOOK_LOG_STREAM_HOLD", c.HoldFor)
	c.ReleaseFill = float64(env.Int("LOGBOOK_LOG_STREAM_RELEASE_FILL_PERCENT", 80, 10, 100)) / 100
	return c
}
