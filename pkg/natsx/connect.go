package natsx

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
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
