package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// keyedMsg is a raw message as the gateway publishes an event sent with an Idempotency-Key: on the
// key's subject, only if that subject holds nothing yet.
func keyedMsg(org, key, id string) *nats.Msg {
	m := nats.NewMsg(event.RawKeySubject(org, key))
	m.Data = []byte(id)
	m.Header.Set(jetstream.MsgIDHeader, org+":"+id)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	return m
}

// subjectTaken reports whether err is JetStream refusing a message because its subject already
// holds one (10071; replicated streams say 10164).
func subjectTaken(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Two messages for one key inside one atomic batch: nats-server refuses the batch whole (an
// expected last subject sequence on a subject already written in the batch), GroupCommit then
// publishes its messages one by one, and exactly the first of the two is stored.
func TestGroupCommitOneMessagePerKeySubject(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, keyedMsg("org_a", "taken", "e0")))
	errs := g.PublishAll(ctx, []*nats.Msg{
		keyedMsg("org_a", "k1", "e1"), keyedMsg("org_a", "k1", "e2"), // same key, two attempts
		keyedMsg("org_a", "taken", "e3"), // a key stored before
		keyedMsg("org_b", "k1", "e4"),    // the same key in another organization
		rawMsg("org_a", "org_a:e5", 10),  // an event without a key
	})
	assert.NoError(t, errs[0])
	assert.True(t, subjectTaken(errs[1]), "the second message of a key is refused: %v", errs[1])
	assert.True(t, subjectTaken(errs[2]), "a key already stored is refused: %v", errs[2])
	assert.NoError(t, errs[3])
	assert.NoError(t, errs[4])
	ids, _ := storedIDs(t, js)
	assert.ElementsMatch(t, []string{"org_a:e0", "org_a:e1", "org_b:e4", "org_a:e5"}, ids)
}

// Concurrent publishes for one key, spread over batches: exactly one is stored, every other is
// told the subject is taken.
func TestGroupCommitConcurrentPublishesForOneKey(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	const attempts = 64
	errs := make([]error, attempts)
	var wg sync.WaitGroup
	for i := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Publish(context.Background(), keyedMsg("org_a", "k", fmt.Sprint("e", i)))
		}()
		// Unrelated traffic in the same batches.
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, g.Publish(context.Background(), rawMsg("org_a", fmt.Sprint("other-", i), 10)))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		assert.True(t, subjectTaken(err), "%v", err)
	}
	assert.Equal(t, 1, won)
	ids, _ := storedIDs(t, js)
	assert.Len(t, ids, attempts+1)
}
