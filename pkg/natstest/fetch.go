package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Fetch takes exactly n messages from c (waiting up to 5 s) and returns them unacknowledged, as a
// worker that stalls with a batch in hand holds them; fewer is a test failure.
func Fetch(t testing.TB, c jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	b, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("failed to fetch %d messages: %v", n, err)
	}
	msgs := make([]jetstream.Msg, 0, n)
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d (fetch: %v)", len(msgs), n, b.Error())
	}
	return msgs
}
