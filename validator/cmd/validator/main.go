// Command validator runs validator replicas' worker: raw stream in, valid or rejected stream out.
// Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/validator/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "validator")
	if err := run(ctx, env, log); err != nil {
		log.Error("validator stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-validator")
	if err != nil {
		return err
	}
	defer nc.Drain()
	reg, err := schema.NewRegistry(ctx, js, log)
	if err != nil {
		return err
	}
	defer reg.Close()
	cfg := worker.DefaultConfig()
	cfg.AckWait = env.Duration("LOGBOOK_VALIDATOR_ACK_WAIT", cfg.AckWait)
	w, err := worker.New(ctx, js, reg, cfg, log)
	if err != nil {
		return err
	}
	log.Info("validating")
	return w.Run(ctx)
}
