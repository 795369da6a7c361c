package proc

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// NATS is a nats-server process: a configuration file (Logbook ships deploy/nats/nats.conf) on a
// loopback client port that stays the same across restarts, JetStream in its own store directory.
type NATS struct {
	*Process
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL string
	// Monitor is the monitoring base URL (GET /healthz answers 200 once JetStream is up).
	Monitor string
}

// StartNATS runs bin (a nats-server) with conf, overriding the listen address and the ports by
// flags; env carries what the configuration reads (deploy/nats/nats.conf: NATS_STORE_DIR and the
// credentials). It waits until the server reports healthy.
func StartNATS(t testing.TB, bin, conf string, env []string) *NATS {
	t.Helper()
	client, monitor := port(t, FreeAddr(t)), port(t, FreeAddr(t))
	args := []string{"-c", conf, "-a", "127.0.0.1", "-p", strconv.Itoa(client), "-m", strconv.Itoa(monitor)}
	n := &NATS{
		Process: Start(t, "nats-server", bin, args, env),
		URL:     fmt.Sprintf("nats://127.0.0.1:%d", client),
		Monitor: fmt.Sprintf("http://127.0.0.1:%d", monitor),
	}
	n.WaitHealthy(t)
	return n
}

// WaitHealthy waits until the server's /healthz answers 200.
func (n *NATS) WaitHealthy(t testing.TB) {
	t.Helper()
	WaitStatus(t, n.Process, n.Monitor+"/healthz", 200, 30*time.Second)
}

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
