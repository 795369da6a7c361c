package logstream

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// Lag is how far a stream is behind.
type Lag struct {
	// Events is how many events are undelivered; known only while the stream is live.
	Events      uint64
	EventsKnown bool
	// Oldest is when the oldest undelivered event was stored (live) or received (catch-up); zero
	// when nothing is undelivered.
	Oldest time.Time
}

// Seconds is the lag in seconds at now (0 when nothing is undelivered).
func (l Lag) Seconds(now time.Time) float64 {
	if l.Oldest.IsZero() {
		return 0
	}
	return max(0, now.Sub(l.Oldest).Seconds())
}

// ReadLag reads stream s's lag: from its consumer while live (undelivered count, and the time
// the oldest undelivered message was stored), from its catch-up position otherwise.
func ReadLag(ctx context.Context, js jetstream.JetStream, s *Stream, st Status) (Lag, error) {
	if st.Mode == ModeCatchUp || st.Consumer == "" {
		var l Lag
		if st.CatchUpFrom != nil {
			l.Oldest = *st.CatchUpFrom
		}
		return l, nil
	}
	c, err := js.Consumer(ctx, event.StreamValid, st.Consumer)
	if err != nil {
		return Lag{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Lag{}, err
	}
	l := Lag{Events: info.NumPending + uint64(info.NumAckPending), EventsKnown: true}
	if l.Events == 0 {
		return l, nil
	}
	vs, err := js.Stream(ctx, event.StreamValid)
	if err != nil {
		return l, err
	}
	m, err := vs.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(s.Subject()))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	l.Oldest = m.Time
	return l, nil
}
