// Package natsembed runs a nats-server inside the process: the broker of the single-process mode
// (deploy/logbook) and the real NATS of the tests. It is the only package of Logbook that imports
// nats-server, and only deploy/logbook, deploy/bench and tests import it, so the four service
// binaries do not link the server (its init starts a /proc poller, and image scanners would report
// its advisories against every service).
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded nats-server.
type Config struct {
	// StoreDir is where JetStream keeps its files (under StoreDir/jetstream).
	StoreDir string
	// Listen, when set, also serves NATS over TCP on that host:port (port 0 for any free port) so
	// separate processes can connect; when empty the server is reachable only in-process. An empty
	// host means loopback (127.0.0.1), not every interface. A host off loopback needs User and
	// Password: Start refuses it otherwise, since whoever reaches NATS can read the signing secrets,
	// add API keys and publish straight into the validated stream.
	Listen string
	// User and Password, when both set, are required of every client, in-process ones included.
	User, Password string
}

// ErrOpenListener is returned by Start for a TCP listener off loopback without credentials.
var ErrOpenListener = errors.New("the embedded NATS server would listen off loopback without credentials")

// Start starts a nats-server with JetStream on disk and fsync after every write (sync always),
// waits until it is ready, and returns it. The caller shuts it down (Shutdown, WaitForShutdown).
func Start(cfg Config) (*server.Server, error) {
	if (cfg.User == "") != (cfg.Password == "") {
		return nil, errors.New("the embedded NATS server needs both a user and a password, or neither")
	}
	opts := &server.Options{
		ServerName: "logbook",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true, // an acknowledged publish is on disk: the NATS default fsyncs every 2 minutes
		NoSigs:     true, // the embedding process owns SIGINT/SIGTERM
		NoLog:      true,
		DontListen: cfg.Listen == "",
		Username:   cfg.User,
		Password:   cfg.Password,
		// JetStream limits are left to the streams' own MaxBytes.
	}
	if cfg.Listen != "" {
		host, port, err := ListenAddr(cfg.Listen)
		if err != nil {
			return nil, err
		}
		if !Loopback(host) && cfg.User == "" {
			return nil, fmt.Errorf("%w (%s): set a user and password, or listen on 127.0.0.1", ErrOpenListener, cfg.Listen)
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("failed to create nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats-server did not become ready within 30s")
	}
	return ns, nil
}

// ListenAddr splits a listen address into the host nats-server should bind (127.0.0.1 when the
// host is empty) and its port (-1, nats-server's "any free port", for 0).
func ListenAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("bad nats listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad nats listen port in %q", addr)
	}
	if port == 0 {
		port = -1
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// Loopback reports whether host (a name or an address) is the loopback interface.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
