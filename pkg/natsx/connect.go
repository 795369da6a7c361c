package natsx

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
)

// StaleAfter bounds how long a connection stays on a server that stopped answering without closing
// it (a node cut off by a network partition, a frozen process): the client pings every
// PingInterval and gives up after MaxPingsOut unanswered pings, then reconnects to another server
// of its list. nats.go's defaults (every 2 minutes, 2 unanswered) would leave a service on a
// cut-off node, answering 503 or fetching nothing, for 4 to 6 minutes.
const (
	PingInterval = 5 * time.Second
	MaxPingsOut  = 3
	StaleAfter   = (MaxPingsOut + 1) * PingInterval
)

// ConnectInProcess connects to an embedded server (pkg/natsembed) without a socket. opts add
// credentials (Auth.Options) or other settings.
func ConnectInProcess(ns nats.InProcessConnProvider, name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	return connect("", name, append(opts, nats.InProcessServer(ns))...)
}

// Connect connects to a NATS server or cluster by URL (comma-separated for several). opts add
// credentials and TLS (Auth.Options) or other settings. The connection reconnects forever.
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	return connect(url, name, opts...)
}

func connect(url, name string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
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

// DefaultURL is the NATS server the services reach when LOGBOOK_NATS_URL is unset.
const DefaultURL = "nats://127.0.0.1:4222"

// ConnectFromEnv connects to LOGBOOK_NATS_URL (default nats://127.0.0.1:4222) with the credentials
// and TLS settings of AuthFromEnv, and prepares the streams and buckets with the limits from the
// environment. Used by the separate service binaries.
func ConnectFromEnv(ctx context.Context, env *config.Env, name string) (*nats.Conn, jetstream.JetStream, error) {
	url := env.String("LOGBOOK_NATS_URL", DefaultURL)
	auth := AuthFromEnv(env)
	limits := LimitsFromEnv(env)
	if err := env.Err(); err != nil {
		return nil, nil, err
	}
	opts, err := auth.Options()
	if err != nil {
		return nil, nil, err
	}
	nc, js, err := Connect(url, name, opts...)
	if err != nil {
		return nil, nil, err
	}
	if err := Prepare(ctx, js, limits); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
