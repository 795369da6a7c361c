package faults

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An Idempotency-Key holds beyond JetStream's duplicate window whatever happened to the first
// attempt: here the process dies after the event is stored and before it answers (so a producer
// retries), and the retry comes after the duplicate window (shortened to 1 s). The event is stored
// once: one message in each stream, one row.
func TestKeyHoldsAfterAKillAndTheDuplicateWindow(t *testing.T) {
	dir := t.TempDir()
	const org = "org_idem_kill"
	shortWindow := "LOGBOOK_STREAM_DUPLICATES=1s"
	first := start(t, dir, "gateway-after-publish=kill@1", shortWindow)
	require.False(t, emit(first.addr, org, 1), "the first attempt dies before its answer")
	<-first.done
	require.Contains(t, first.log.String(), "failpoint")

	second := start(t, dir, "", shortWindow)
	time.Sleep(1500 * time.Millisecond) // past the duplicate window
	require.True(t, emit(second.addr, org, 1), "the retry is answered:\n%s", second.log)
	require.True(t, emit(second.addr, org, 2), "another key is another event")
	waitSettled(t, second)

	// Every stream message is one row the writer inserts: count them, which no background merge
	// of the ReplacingMergeTree can collapse, and the rows the query API returns.
	for _, stream := range []string{"LOGBOOK_RAW", "LOGBOOK_VALID"} {
		got := streamCounts(t, second, stream, org)
		assert.Equal(t, map[int]int{1: 1, 2: 1}, got, "messages per event in %s", stream)
	}
	assert.Equal(t, map[int]int{1: 1, 2: 1}, stored(t, second.addr, org), "rows per event")
}

// streamCounts reads every message of stream and counts org's by the event's metadata "n".
func streamCounts(t *testing.T, n *node, stream, org string) map[int]int {
	t.Helper()
	nc, err := nats.Connect("nats://" + n.nats)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	counts := map[int]int{}
	for read := uint64(0); read < info.State.Msgs; {
		b, err := c.Fetch(int(info.State.Msgs-read), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for m := range b.Messages() {
			got++
			var rec struct {
				Org   string          `json:"organization_id"`
				Event json.RawMessage `json:"event"`
			}
			require.NoError(t, json.Unmarshal(m.Data(), &rec))
			if rec.Org != org { // other organizations, such as Logbook's own records in org_logbook
				continue
			}
			var ev struct {
				Metadata map[string]int `json:"metadata"`
			}
			require.NoError(t, json.Unmarshal(rec.Event, &ev))
			counts[ev.Metadata["n"]]++
		}
		require.Positive(t, got, "the stream stopped short of %d messages", info.State.Msgs)
		read += uint64(got)
	}
	return counts
}
