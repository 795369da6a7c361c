// Command queryapi serves stored events from a ClickHouse server: GET /audit_logs/events.
// Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/search"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "queryapi")
	if err := run(ctx, env, log); err != nil {
		log.Error("queryapi stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	addr := env.String("LOGBOOK_ADDR", "0.0.0.0:8080")
	st, err := store.ServerFromEnv(ctx, env)
	if err != nil {
		return err
	}
	defer st.Close()
	// NATS only for the API key bucket, so every replica accepts the same keys.
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-queryapi")
	if err != nil {
		return err
	}
	defer nc.Drain()
	keys, err := apikey.NewVerifier(ctx, js, log)
	if err != nil {
		return err
	}
	defer keys.Close()
	e := wire.NewServer(log)
	search.New(st).Register(e.Group("", wire.Auth(keys)))
	log.Info("listening", "addr", addr)
	return wire.Serve(ctx, e, addr)
}
