// Command queryapi serves what is read from ClickHouse: GET /audit_logs/events, the exports
// (/audit_logs/exports…, run in the background here) and the organizations' retention
// (/organizations/{id}/audit_logs_retention). Configuration: LOGBOOK_* variables (see the README).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/store/storemetrics"
	"github.com/logbookhq/logbook/pkg/wire"
	alertapi "github.com/logbookhq/logbook/queryapi/alerts"
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
	if err := run(ctx, env, log); err != nil {
		log.Error("queryapi stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, env *config.Env, log *slog.Logger) error {
	addr := env.Addr("LOGBOOK_ADDR", "0.0.0.0:8080")
	adminAddr := env.Addr("LOGBOOK_ADMIN_ADDR", obs.DefaultAdminAddr)
	pc := portal.ConfigFromEnv(env)
	limits := wire.RateLimitFromEnv(env)
	ec := export.DefaultConfig()
	ec.PublicURL = env.BaseURL("LOGBOOK_PUBLIC_URL", "")
	sweepEvery := env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour)
	replicas := int(env.Int("LOGBOOK_STREAM_REPLICAS", 1, 1, 5))
	st, err := store.ServerFromEnv(ctx, env)
	if err != nil {
		return err
	}
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
	search.New(st, ret).Register(g)
	organizations.New(ret, st, log).Register(g)
	exp.Register(g)
	exp.RegisterDownload(e)
	recorder := logstream.RawRecorder{Pub: js, NewID: logstreams.NewEventID}
	streamAPI := logstreams.New(js, streams, recorder)
	streamAPI.Register(g)
	alertapi.New(rules, streams, recorder).Register(g)
	portal.New(links, search.New(st, ret), exp, pc, log).Also(streamAPI.Viewer()).Register(e, g)
	log.Info("listening", "addr", addr)
	return wire.Serve(ctx, e, addr)
}
