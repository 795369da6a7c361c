package obs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// DefaultBacklogDegradedAfter is how long an event may wait unsettled before BacklogCheck fails
// (LOGBOOK_BACKLOG_DEGRADED_AFTER).
const DefaultBacklogDegradedAfter = 15 * time.Minute

// StreamFullFraction is the fill of its byte cap at which StreamFillCheck reports a stream.
const StreamFullFraction = 0.9

// BacklogCheck fails while some durable consumer of one of streams has left an event unsettled for
// longer than after (the writer stopped, ClickHouse unreachable): nothing is lost while it waits,
// but an operator should know. Add it with Health.AddDegraded.
func BacklogCheck(js jetstream.JetStream, after time.Duration, streams ...string) Check {
	return func(ctx context.Context) error {
		var errs []error
		for _, stream := range streams {
			p, err := natsx.ReadProgress(ctx, js, stream)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, c := range p.Consumers {
				if !c.Oldest.IsZero() && p.Now.Sub(c.Oldest) > after {
					errs = append(errs, fmt.Errorf("consumer %s of %s has left an event unsettled for %s (more than %s)",
						c.Name, stream, p.Now.Sub(c.Oldest).Round(time.Second), after))
				}
			}
		}
		return errors.Join(errs...)
	}
}

// StreamFillCheck fails while one of streams holds StreamFullFraction of its byte cap or more: a
// full raw stream answers producers 503, a full valid or rejected stream stops the validator (it
// retries) until space is made. Add it with Health.AddDegraded.
func StreamFillCheck(js jetstream.JetStream, streams ...string) Check {
	return func(ctx context.Context) error {
		var errs []error
		for _, stream := range streams {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				errs = append(errs, fmt.Errorf("failed to read stream %s: %w", stream, err))
				continue
			}
			info := s.CachedInfo()
			if capacity := info.Config.MaxBytes; capacity > 0 && float64(info.State.Bytes) >= StreamFullFraction*float64(capacity) {
				errs = append(errs, fmt.Errorf("stream %s holds %d of its %d bytes", stream, info.State.Bytes, capacity))
			}
		}
		return errors.Join(errs...)
	}
}
