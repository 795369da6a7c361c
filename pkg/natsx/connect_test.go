package natsx_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// A server that stops answering without closing the connection (a node cut off from the network,
// a frozen process) is left within StaleAfter: the connection is declared stale and the client
// moves on to another server of its list. With nats.go's default pings (every 2 minutes, 2 may go
// unanswered) a service connected to a cut-off node answered 503 for 4 to 6 minutes.
func TestConnectLeavesAServerThatStoppedAnswering(t *testing.T) {
	t.Parallel()
	silent := newProxy(t, tcpServer(t)[len("nats://"):])
	other := tcpServer(t)
	nc, _, err := natsx.Connect(silent.URL()+","+other, "stale", nats.DontRandomize())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.Equal(t, silent.URL(), nc.ConnectedUrl())

	silent.Silence()
	start := time.Now()
	require.Eventually(t, func() bool { return nc.IsConnected() && nc.ConnectedUrl() == other },
		natsx.StaleAfter+5*time.Second, 100*time.Millisecond, "still on the server that stopped answering")
	t.Logf("moved to the other server after %s", time.Since(start).Round(100*time.Millisecond))
}
