package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
)

// EmbeddedConfig configures the in-process nats-server of the single-process mode and of tests.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its files (under StoreDir/jetstream).
	StoreDir string
	// Listen, when set (host:port, port 0 for any), also serves NATS over TCP on that address so
	// separate processes can connect; when empty the server is reachable only in-process.
	Listen string
}

// StartEmbedded starts a nats-server with JetStream on disk and fsync after every write
// (sync always), waits until it is ready, and returns it. The caller shuts it down.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "logbook",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true, // an acknowledged publish is on disk: the NATS default fsyncs every 2 minutes
		NoSigs:     true, // the embedding process owns SIGINT/SIGTERM
		NoLog:      true,
		DontListen: cfg.Listen == "",
		// JetStream limits are left to the streams' own MaxBytes.
	}
	if cfg.Listen != "" {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, err
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

// ConnectInProcess connects to an embedded server without a socket.
func ConnectInProcess(ns *server.Server, name string) (*nats.Conn, jetstream.JetStream, error) {
	return connect("", name, nats.InProcessServer(ns))
}

// Connect connects to a NATS server or cluster by URL (comma-separated for several).
func Connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	return connect(url, name)
}

func connect(url, name string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to connect to nats %q: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("failed to open jetstream: %w", err)
	}
	return nc, js, nil
}

// ConnectFromEnv connects to LOGBOOK_NATS_URL (default nats://127.0.0.1:4222) and prepares the
// streams and buckets with the limits from the environment. Used by the separate service binaries.
func ConnectFromEnv(ctx context.Context, env *config.Env, name string) (*nats.Conn, jetstream.JetStream, error) {
	url := env.String("LOGBOOK_NATS_URL", "nats://127.0.0.1:4222")
	limits := LimitsFromEnv(env)
	if err := env.Err(); err != nil {
		return nil, nil, err
	}
	nc, js, err := Connect(url, name)
	if err != nil {
		return nil, nil, err
	}
	if err := Prepare(ctx, js, limits); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
