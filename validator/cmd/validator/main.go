// Command validator runs validator replicas' worker: raw stream in, valid or rejected stream out.
// Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/validator/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "validator")
	if err := failpoint.Err(); err != nil {
		log.Error("validator cannot start", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, env, log); err != nil {
		log.Error("validator stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	cfg := worker.DefaultConfig()
	cfg.AckWait = env.Duration("LOGBOOK_VALIDATOR_ACK_WAIT", cfg.AckWait)
	backlogAfter := env.Duration("LOGBOOK_BACKLOG_DEGRADED_AFTER", obs.DefaultBacklogDegradedAfter)
	cfg.Loops = int(env.Int("LOGBOOK_VALIDATORS", int64(cfg.Loops), 1, 64))
	adminAddr := env.Addr("LOGBOOK_ADMIN_ADDR", obs.DefaultAdminAddr)
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-validator") // reports every bad variable
	if err != nil {
		return err
	}
	defer natsx.DrainAndWait(nc, 10*time.Second)
	adm, err := obs.StartService(ctx, adminAddr, js, log)
	if err != nil {
		return err
	}
	defer adm.Close()
	adm.Registry.MustRegister(obs.NewJetStream("validator", js, []string{event.StreamRejected},
		obs.Consumer{Stream: event.StreamRaw, Name: event.ConsumerValidator}))
	adm.Health.AddDegraded("backlog", obs.BacklogCheck(js, backlogAfter, event.StreamRaw))
	adm.Health.AddDegraded("streams", obs.StreamFillCheck(js, event.StreamValid, event.StreamRejected))
	reg, err := schema.NewRegistry(ctx, js, log)
	if err != nil {
		return err
	}
	defer reg.Close()
	w, err := worker.New(ctx, js, reg, cfg, log)
	if err != nil {
		return err
	}
	w.UseMetrics(obs.NewValidator(adm.Registry))
	adm.Health.Add("publish", w.Check)
	// Settled raw events older than the keep time go (every validator replica trims alike).
	go natsx.NewTrimmer(js, log, event.StreamRaw).Run(ctx)
	adm.Health.AddDegraded("validator_output", w.OutputCheck())
	log.Info("validating")
	return w.Run(ctx)
}
