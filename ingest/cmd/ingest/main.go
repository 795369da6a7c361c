// Command ingest runs the gateway alone: POST /audit_logs/events (Idempotency-Keys kept 24 h) and
// the schema routes (/audit_logs/actions…, /organizations/{id}/audit_logs/actions/…), publishing
// to a NATS cluster. Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "ingest")
	if err := failpoint.Err(); err != nil {
		log.Error("ingest cannot start", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, env, log); err != nil {
		log.Error("ingest stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	cfg := gateway.DefaultConfig()
	cfg.MaxBodyBytes = env.Int("LOGBOOK_MAX_BODY_BYTES", cfg.MaxBodyBytes, 1<<10, 900<<10)
	addr := env.Addr("LOGBOOK_ADDR", "0.0.0.0:8080")
	adminAddr := env.Addr("LOGBOOK_ADMIN_ADDR", obs.DefaultAdminAddr)
	httpc := wire.HTTPFromEnv(env)
	presetKey := apikey.PresetFromEnv(env)
	limits := wire.RateLimitFromEnv(env)
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-ingest")
	if err != nil {
		return err
	}
	defer natsx.DrainAndWait(nc, 10*time.Second)
	adm, err := obs.StartService(ctx, adminAddr, js, log)
	if err != nil {
		return err
	}
	defer adm.Close()
	adm.Registry.MustRegister(obs.NewJetStream("ingest", js, []string{event.StreamRaw}))
	adm.Health.AddDegraded("streams", obs.StreamFillCheck(js, event.StreamRaw))
	audit := selfaudit.New(js, log)
	keyStore, err := apikey.Open(ctx, js)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	keyStore.BeforeChange(selfaudit.KeyChanges(audit, host))
	key, err := keyStore.Ensure(ctx, presetKey) // LOGBOOK_API_KEY is the key "env"; changes are recorded
	if err != nil {
		return err
	}
	if key != "" {
		fmt.Printf("Generated API key (shown once; only its hash is stored): %s\n", key)
	}
	reg, err := schema.NewRegistry(ctx, js, log)
	if err != nil {
		return err
	}
	defer reg.Close()
	keys, err := apikey.NewVerifier(ctx, js, log)
	if err != nil {
		return err
	}
	defer keys.Close()
	rawStream, err := js.Stream(ctx, event.StreamRaw)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", event.StreamRaw, err)
	}
	raw := gateway.NewPublisher(nc, js)
	defer raw.Close()
	adm.Health.Add("publish", raw.Check)
	e := wire.NewServer(log)
	e.Use(obs.HTTP(adm.Registry, "ingest"))
	gw := gateway.New(raw, rawStream, reg, cfg, log)
	gw.UseAudit(audit)
	gw.Register(e.Group("", wire.Auth(keys), wire.RateLimit(wire.NewLimiter(limits))))
	log.Info("listening", "addr", addr)
	return wire.Serve(ctx, e, addr, httpc)
}
