package faults

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// shortKeep makes the streams keep settled events 2 s (duplicate window 1 s), so an outage of a
// few seconds outlasts it. LOGBOOK_STREAM_MAX_AGE is the old name of LOGBOOK_STREAM_KEEP.
var shortKeep = []string{"LOGBOOK_STREAM_KEEP=2s", "LOGBOOK_STREAM_MAX_AGE=2s",
	"LOGBOOK_STREAM_DUPLICATES=1s", "LOGBOOK_IDEMPOTENCY_WINDOW=2s"}

// outage is how long the writer's first batch is held (writer-after-record=block), well past the
// 2 s keep time.
const outage = 8 * time.Second

// The writer is held (a ClickHouse outage, a stuck INSERT) four times longer than the streams keep
// settled events while producers keep sending; when it is released, every acknowledged event is
// stored: nothing expired unsettled in the meantime.
func TestWriterOutageLongerThanKeep(t *testing.T) {
	dir := t.TempDir()
	org := "org_outage"
	l := &ledger{sent: map[int]bool{}, acked: map[int]bool{}}
	next := 0
	n := start(t, dir, "writer-after-record=block:"+outage.String(), shortKeep...)
	stop := make(chan struct{})
	time.AfterFunc(outage/2, func() { close(stop) })
	load(n, org, l, &next, stop)
	waitSettled(t, n)
	// What is settled and older than the keep time is trimmed from both streams.
	require.Eventually(t, func() bool { return streamMsgs(t, n, "LOGBOOK_RAW") == 0 && streamMsgs(t, n, "LOGBOOK_VALID") == 0 },
		30*time.Second, 200*time.Millisecond, "settled events were never trimmed")
	check(t, n, org, l) // stops the node: its log is complete (and no longer written)
	require.Contains(t, n.log.String(), "failpoint writer-after-record: blocking", "the writer was never held")
	require.Contains(t, n.log.String(), "failpoint writer-after-record: released")
}

func streamMsgs(t *testing.T, n *node, stream string) uint64 {
	t.Helper()
	nc, err := nats.Connect("nats://" + n.nats)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	return s.CachedInfo().State.Msgs
}
