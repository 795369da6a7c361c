// Command queryapi serves what is read from ClickHouse: GET /audit_logs/events, the exports
// (/audit_logs/exports…, run in the background here) and the organizations' retention
// (/organizations/{id}/audit_logs_retention). Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/settle"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/store/storemetrics"
	"github.com/logbookhq/logbook/pkg/wire"
	alertapi "github.com/logbookhq/logbook/queryapi/alerts"
	"github.com/logbookhq/logbook/queryapi/apikeys"
	"github.com/logbookhq/logbook/queryapi/export"
	"github.com/logbookhq/logbook/queryapi/logstreams"
	"github.com/logbookhq/logbook/queryapi/organizations"
	"github.com/logbookhq/logbook/queryapi/portal"
	"github.com/logbookhq/logbook/queryapi/search"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("service", "queryapi")
	if err := failpoint.Err(); err != nil {
		log.Error("queryapi cannot start", "err", err)
		os.Exit(2)
	}
	if err := run(ctx, env, log); err != nil {
		log.Error("queryapi stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	addr := env.Addr("LOGBOOK_ADDR", "0.0.0.0:8080")
	adminAddr := env.Addr("LOGBOOK_ADMIN_ADDR", obs.DefaultAdminAddr)
	httpc := wire.HTTPFromEnv(env)
	pc := portal.ConfigFromEnv(env)
	limits := wire.RateLimitFromEnv(env)
	ec := export.ConfigFromEnv(env)
	sweepEvery := env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour)
	presetKey := apikey.PresetFromEnv(env)
	reads := store.ReadLimitsFromEnv(env)
	replicas := int(env.Int("LOGBOOK_STREAM_REPLICAS", 1, 1, 5))
	st, err := store.ServerFromEnv(ctx, env)
	if err != nil {
		return err
	}
	st = st.WithLimits(reads)
	defer st.Close()
	// NATS for the API keys, retention settings, export jobs and files.
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-queryapi")
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
	st = st.Decorate(storemetrics.Decorator(adm.Registry, "queryapi"))
	// Either service applies LOGBOOK_API_KEY (the key "env") at start, recording what it changes;
	// the first start of an installation without one generates a key and prints it once.
	audit := selfaudit.New(js, log)
	keyStore, err := apikey.Open(ctx, js)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	keyStore.BeforeChange(selfaudit.KeyChanges(audit, host))
	if key, err := keyStore.Ensure(ctx, presetKey); err != nil {
		return err
	} else if key != "" {
		fmt.Printf("Generated API key (shown once; only its hash is stored): %s\n", key)
	}
	keys, err := apikey.NewVerifier(ctx, js, log)
	if err != nil {
		return err
	}
	defer keys.Close()
	ret, err := retention.Watch(ctx, js, log)
	if err != nil {
		return err
	}
	defer ret.Close()
	exp, err := export.Open(ctx, js, st, ret, ec, log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); _ = exp.Run(ctx) }()
	go func() { defer wg.Done(); organizations.Sweep(ctx, ret, st, sweepEvery, log) }()
	links, err := portal.LoadLinks(ctx, js)
	if err != nil {
		return err
	}
	streams, err := logstreams.Open(ctx, js, replicas)
	if err != nil {
		return err
	}
	rules, err := alertapi.Open(ctx, js, replicas)
	if err != nil {
		return err
	}
	e := wire.NewServer(log)
	e.Use(obs.HTTP(adm.Registry, "queryapi"))
	g := e.Group("", wire.Auth(keys), wire.RateLimit(wire.NewLimiter(limits)))
	stored := settle.New(js)
	search.New(st, ret).ReadsOwnWrites(stored).Register(g)
	orgs := organizations.New(ret, st, log)
	orgs.UseAudit(audit)
	orgs.Register(g)
	exp.UseAudit(audit)
	exp.Register(g)
	exp.RegisterDownload(e)
	viewer := portal.New(links, search.New(st, ret).ReadsOwnWrites(stored), exp, pc, log)
	viewer.UseAudit(audit)
	keyAdmin := apikeys.New(keyStore, audit)
	keyAdmin.UseLocal(keys)
	apikeys.NewAPI(keyAdmin, log).Register(g)
	recorder := logstreams.Audited(audit)
	streamAPI := logstreams.New(js, streams, recorder)
	streamAPI.UseAccess(logstreams.KeyAccess())
	streamAPI.Register(g)
	rulesAPI := alertapi.New(rules, streams, recorder)
	rulesAPI.UseAccess(logstreams.KeyAccess())
	rulesAPI.Register(g)
	viewer.Also(streamAPI.Viewer()).Register(e, g)
	log.Info("listening", "addr", addr)
	return wire.Serve(ctx, e, addr, httpc)
}
