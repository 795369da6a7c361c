// Command writer runs a writer replica: valid stream in, batched INSERTs into a ClickHouse server
// out. It applies the table migrations at start-up. Configuration: LOGBOOK_* variables (README).
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
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/store/storemetrics"
	"github.com/logbookhq/logbook/writer/alerts"
	"github.com/logbookhq/logbook/writer/batcher"
	"github.com/logbookhq/logbook/writer/logstream"
	"github.com/logbookhq/logbook/writer/outputs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "writer")
	if err := failpoint.Err(); err != nil {
		log.Error("writer cannot start", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, env, log); err != nil {
		log.Error("writer stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	cfg := batcher.DefaultConfig()
	cfg.AckWait = env.Duration("LOGBOOK_WRITER_ACK_WAIT", cfg.AckWait)
	cfg.MaxRows = int(env.Int("LOGBOOK_BATCH_ROWS", int64(cfg.MaxRows), 1, 1_000_000))
	cfg.MaxBytes = int(env.Int("LOGBOOK_BATCH_BYTES", int64(cfg.MaxBytes), 64<<10, 1<<30))
	cfg.MaxWait = env.Duration("LOGBOOK_BATCH_WAIT", cfg.MaxWait)
	backlogAfter := env.Duration("LOGBOOK_BACKLOG_DEGRADED_AFTER", obs.DefaultBacklogDegradedAfter)
	adminAddr := env.Addr("LOGBOOK_ADMIN_ADDR", obs.DefaultAdminAddr)
	out := outputs.Config{Replicas: int(env.Int("LOGBOOK_STREAM_REPLICAS", 1, 1, 5)),
		LogStreams: logstream.ConfigFromEnv(env), Alerts: alerts.DefaultConfig()}
	st, err := store.ServerFromEnv(ctx, env)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-writer")
	if err != nil {
		return err
	}
	defer natsx.DrainAndWait(nc, 10*time.Second)
	adm, err := obs.StartService(ctx, adminAddr, js, log)
	if err != nil {
		return err
	}
	defer adm.Close()
	adm.Health.Add("clickhouse", st.Ping)
	adm.Registry.MustRegister(obs.NewJetStream("writer", js, []string{event.StreamValid},
		obs.Consumer{Stream: event.StreamValid, Name: event.ConsumerWriter}))
	adm.Health.AddDegraded("backlog", obs.BacklogCheck(js, backlogAfter, event.StreamValid))
	// Each row is stamped with its organization's retention (the TTL drops parts by it).
	ret, err := retention.Watch(ctx, js, log)
	if err != nil {
		return err
	}
	defer ret.Close()
	// Beside the writer: log-stream delivery and alert rules, on the same valid stream.
	workers, err := outputs.Open(ctx, js, st, out, adm.Registry, log)
	if err != nil {
		return err
	}
	outputsDone := make(chan struct{})
	go func() { defer close(outputsDone); _ = workers.Run(ctx) }()
	defer func() { <-outputsDone }()
	w, err := batcher.New(ctx, js, st.Decorate(storemetrics.Decorator(adm.Registry, "writer")), cfg, log)
	if err != nil {
		return err
	}
	// Settled valid events older than the keep time go (every writer replica trims alike).
	go natsx.NewTrimmer(js, log, event.StreamValid).Run(ctx)
	w.UseRetention(ret.Days)
	log.Info("writing")
	return w.Run(ctx)
}
