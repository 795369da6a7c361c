package batcher

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
)

// tokenPattern is what store.Insert accepts as a dedup token.
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9:._-]{1,128}$`)

func tokenRecords(org string, ids ...string) []*event.Record {
	out := make([]*event.Record, len(ids))
	for i, id := range ids {
		out[i] = &event.Record{ID: id, OrganizationID: org, ReceivedAt: time.Now().UTC(),
			Event: event.Event{Action: "a", OccurredAt: time.Now().UTC(), Actor: event.Entity{ID: "u", Type: "user"},
				Context: event.Context{Location: "x"}}}
	}
	return out
}

func publishRecs(t *testing.T, js jetstream.JetStream, recs []*event.Record, msgIDSuffix string) {
	t.Helper()
	for _, r := range recs {
		data, err := r.Marshal()
		require.NoError(t, err)
		m := nats.NewMsg(event.ValidSubject(r.OrganizationID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, r.MsgID()+msgIDSuffix)
		_, err = js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
}

// fetchRange reads stream sequences [from, from+n) through a fresh ordered consumer, as a writer
// (or a redelivery to another writer) would receive them.
func fetchRange(t *testing.T, js jetstream.JetStream, from uint64, n int) []jetstream.Msg {
	t.Helper()
	c, err := js.OrderedConsumer(context.Background(), event.StreamValid, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	require.NoError(t, err)
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	require.Len(t, msgs, n)
	return msgs
}

func TestBatchTokenIsDeterministicAndDistinct(t *testing.T) {
	_, js := natstest.New(t)
	const org = "org_token"
	recs := tokenRecords(org, "01A", "01B", "01C")
	publishRecs(t, js, recs, "")             // sequences 1-3
	publishRecs(t, js, recs, ":republished") // the same events again at sequences 4-6

	msgs := fetchRange(t, js, 1, 3)
	token := batchToken(msgs, recs)
	require.Regexp(t, tokenPattern, token, "store.Insert must accept the token")
	assert.Contains(t, token, "valid:1-3:")

	tests := []struct {
		name string
		msgs []jetstream.Msg
		recs []*event.Record
		same bool
	}{
		{"same batch again", msgs, recs, true},
		{"same messages fetched again (a redelivery)", fetchRange(t, js, 1, 3), tokenRecords(org, "01A", "01B", "01C"), true},
		{"one event id differs", msgs, tokenRecords(org, "01A", "01B", "01X"), false},
		{"same ids in another organization", msgs, tokenRecords("org_other", "01A", "01B", "01C"), false},
		{"one event fewer", fetchRange(t, js, 1, 2), recs[:2], false},
		{"same events at other sequences", fetchRange(t, js, 4, 3), recs, false},
		{"ids that only concatenate alike", msgs, tokenRecords(org, "01A01", "B", "01C"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := batchToken(tt.msgs, tt.recs)
			assert.Regexp(t, tokenPattern, got)
			if tt.same {
				assert.Equal(t, token, got)
			} else {
				assert.NotEqual(t, token, got)
			}
		})
	}
}

// A full-size batch of long ids still yields a token the store accepts.
func TestBatchTokenLengthIsBounded(t *testing.T) {
	_, js := natstest.New(t)
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = fmt.Sprintf("%0256d", i)
	}
	recs := tokenRecords("org_long", ids...)
	publishRecs(t, js, recs, "")
	tok := batchToken(fetchRange(t, js, 1, len(ids)), recs)
	assert.Regexp(t, tokenPattern, tok)
}
