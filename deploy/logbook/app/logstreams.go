package app

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// openLogStreams prepares the log streams bucket and opens it.
func openLogStreams(ctx context.Context, js jetstream.JetStream, replicas int) (*logstream.Store, error) {
	if err := logstream.EnsureBucket(ctx, js, replicas); err != nil {
		return nil, err
	}
	return logstream.Open(ctx, js)
}

// newEventID mints the id of an event Logbook records about itself.
func newEventID(t time.Time) string { return ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String() }
