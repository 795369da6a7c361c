package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/wire"
)

// lostAcks stores every message through the real group committer but, for the first n publishes,
// tells the caller the acknowledgement never came (natsx.ErrUnconfirmed), as after a timeout.
type lostAcks struct {
	gc *natsx.GroupCommit
	n  atomic.Int32
}

func (l *lostAcks) Publish(ctx context.Context, msg *nats.Msg) error {
	if err := l.gc.Publish(ctx, msg); err != nil {
		return err
	}
	if l.n.Add(-1) >= 0 {
		return fmt.Errorf("publish to %s %w", event.StreamRaw, natsx.ErrUnconfirmed)
	}
	return nil
}

func (l *lostAcks) PublishAll(ctx context.Context, msgs []*nats.Msg) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = l.Publish(ctx, m)
	}
	return errs
}

// A 503 means not stored: an event without an Idempotency-Key whose publish went unconfirmed is
// published again under the same message id until JetStream answers, and the producer is told the
// truth (stored), never a 503 for an event that is in the stream.
func TestUnconfirmedPublishIsResolvedBeforeAnswering(t *testing.T) {
	_, js := natstest.New(t)
	reg, err := schema.NewRegistry(context.Background(), js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	gc := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(gc.Close)
	pub := &lostAcks{gc: gc}
	pub.n.Store(2)
	e := wire.NewServer(quietLog())
	gateway.New(pub, rawStream(t, js), reg, gateway.DefaultConfig(), quietLog()).Register(e.Group(""))
	en := &env{e: e, js: js}

	r := en.postEvent(t, workosBody, nil)
	assert.Equal(t, http.StatusOK, r.Code, "%s", r.Body)
	assert.Equal(t, uint64(1), en.rawCount(t), "stored once, whatever the producer was told")
}
