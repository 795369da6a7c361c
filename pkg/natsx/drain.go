package natsx

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// DrainAndWait drains nc (subscriptions stop taking messages, then everything already published,
// acknowledgements included, is flushed) and waits up to timeout for the connection to close.
// nats.Conn.Drain alone returns at once, and a process that exits right after it can lose its last
// acknowledgements, which JetStream then redelivers.
func DrainAndWait(nc *nats.Conn, timeout time.Duration) error {
	if nc.IsClosed() {
		return nil
	}
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("failed to drain nats connection: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			nc.Close()
			return fmt.Errorf("nats connection did not drain within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
