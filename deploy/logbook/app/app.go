// Package app wires Logbook's four services into one process: an embedded nats-server (JetStream
// on disk, fsync always), the embedded ClickHouse engine on disk, and one HTTP listener serving
// every route of the gateway and the query API (events, schemas, exports, retention) on the same
// root paths. It is the only package importing all four.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
	alertapi "github.com/logbookhq/logbook/queryapi/alerts"
	"github.com/logbookhq/logbook/queryapi/export"
	"github.com/logbookhq/logbook/queryapi/logstreams"
	"github.com/logbookhq/logbook/queryapi/organizations"
	"github.com/logbookhq/logbook/queryapi/portal"
	"github.com/logbookhq/logbook/queryapi/search"
	"github.com/logbookhq/logbook/validator/worker"
	"github.com/logbookhq/logbook/writer/alerts"
	"github.com/logbookhq/logbook/writer/batcher"
	shipping "github.com/logbookhq/logbook/writer/logstream"
	"github.com/logbookhq/logbook/writer/outputs"
	"github.com/logbookhq/logbook/writer/reconcile"
)

// Config is the single-process configuration.
type Config struct {
	// DataDir holds everything kept on disk: DataDir/nats and DataDir/clickhouse. Default ./data.
	DataDir string
	// Addr is the HTTP listen address. Default 127.0.0.1:8080; port 0 picks a free port.
	Addr string
	// APIKey, when set, is accepted as an API key. When empty and no key exists yet, one is
	// generated, only its hash is stored, and it is reported once through Started.APIKey.
	APIKey string
	// NATSListen optionally exposes the embedded NATS server over TCP (host:port).
	NATSListen string
	// LibPath is libchdb.so's path; empty means chdb.DefaultLibPath().
	LibPath string
	Limits  natsx.StreamLimits
	Gateway gateway.Config
	Valid   worker.Config
	Writer  batcher.Config
	Export  export.Config
	Portal  portal.Config
	// RateLimit is the per-API-key token bucket.
	RateLimit wire.RateLimitConfig
	// RetentionSweep is how often shortened retentions are enforced on older rows. Default 1 h.
	RetentionSweep time.Duration
	// LogStreams tunes log-stream delivery.
	LogStreams shipping.Config
	// Alerts tunes alert evaluation and delivery.
	Alerts alerts.Config
}

// ConfigFromEnv reads the LOGBOOK_* variables documented in the README.
func ConfigFromEnv(env *config.Env) Config {
	gw, vc, wc := gateway.DefaultConfig(), worker.DefaultConfig(), batcher.DefaultConfig()
	gw.MaxBodyBytes = env.Int("LOGBOOK_MAX_BODY_BYTES", gw.MaxBodyBytes, 1<<10, 900<<10)
	wc.MaxRows = int(env.Int("LOGBOOK_BATCH_ROWS", int64(wc.MaxRows), 1, 1_000_000))
	wc.MaxWait = env.Duration("LOGBOOK_BATCH_WAIT", wc.MaxWait)
	vc.AckWait = env.Duration("LOGBOOK_VALIDATOR_ACK_WAIT", vc.AckWait)
	wc.AckWait = env.Duration("LOGBOOK_WRITER_ACK_WAIT", wc.AckWait)
	ec := export.DefaultConfig()
	ec.PublicURL = env.BaseURL("LOGBOOK_PUBLIC_URL", "")
	return Config{
		DataDir:        env.String("LOGBOOK_DATA_DIR", "./data"),
		Addr:           env.Addr("LOGBOOK_ADDR", "127.0.0.1:8080"),
		APIKey:         env.String("LOGBOOK_API_KEY", ""),
		NATSListen:     env.String("LOGBOOK_NATS_LISTEN", ""),
		LibPath:        env.String("LOGBOOK_CHDB_LIB", ""),
		Limits:         natsx.LimitsFromEnv(env),
		Gateway:        gw,
		Valid:          vc,
		Writer:         wc,
		Export:         ec,
		Portal:         portal.ConfigFromEnv(env),
		RateLimit:      wire.RateLimitFromEnv(env),
		RetentionSweep: env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour),
		LogStreams:     shipping.ConfigFromEnv(env),
		Alerts:         alerts.DefaultConfig(),
	}
}

// App is a running single-process Logbook.
type App struct {
	// Addr is the address the HTTP server listens on.
	Addr string
	// GeneratedKey is the API key generated on this start, or "" (shown once, never stored).
	GeneratedKey string

	log     *slog.Logger
	ns      *server.Server
	nc      *nats.Conn
	store   *store.Store
	reg     *schema.Registry
	keys    *apikey.Verifier
	ret     *retention.Policies
	gw      *gateway.Gateway
	http    *http.Server
	raw     *natsx.GroupCommit
	cancel  context.CancelFunc
	workers sync.WaitGroup
	obs     *instruments
}

// Start brings Logbook up and returns once it serves HTTP. Close stops it.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (a *App, err error) {
	a = &App{log: log}
	defer func() {
		if err != nil {
			_ = a.Close()
			a = nil
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create data dir: %w", err)
	}
	a.ns, err = natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen})
	if err != nil {
		return nil, err
	}
	nc, js, err := natsx.ConnectInProcess(a.ns, "logbook")
	if err != nil {
		return nil, err
	}
	a.nc = nc
	if err := natsx.Prepare(ctx, js, cfg.Limits); err != nil {
		return nil, err
	}
	if a.GeneratedKey, err = apikey.Ensure(ctx, js, cfg.APIKey); err != nil {
		return nil, err
	}
	db, err := store.OpenEmbedded(cfg.LibPath, filepath.Join(cfg.DataDir, "clickhouse"))
	if err != nil {
		return nil, err
	}
	a.store = store.New(db)
	if err := a.store.Migrate(ctx); err != nil {
		return nil, err
	}
	a.obs = newInstruments(js, a.store, log)
	if a.reg, err = schema.NewRegistry(ctx, js, log); err != nil {
		return nil, err
	}
	if a.keys, err = apikey.NewVerifier(ctx, js, log); err != nil {
		return nil, err
	}
	if a.ret, err = retention.Watch(ctx, js, log); err != nil {
		return nil, err
	}
	val, err := worker.New(ctx, js, a.reg, cfg.Valid, log.With("service", "validator"))
	if err != nil {
		return nil, err
	}
	val.UseMetrics(a.obs.validator)
	wr, err := batcher.New(ctx, js, retention.Stamper{Store: a.obs.writerStore, Policies: a.ret}, cfg.Writer, log.With("service", "writer"))
	if err != nil {
		return nil, err
	}
	exp, err := export.Open(ctx, js, a.obs.queryStore, a.ret, cfg.Export, log.With("service", "export"))
	if err != nil {
		return nil, err
	}
	out, err := outputs.Open(ctx, js, a.store, outputs.Config{Replicas: cfg.Limits.Replicas,
		LogStreams: cfg.LogStreams, Alerts: cfg.Alerts}, a.obs.reg, log)
	if err != nil {
		return nil, err
	}
	sweep := func(ctx context.Context) error {
		organizations.Sweep(ctx, a.ret, a.store, cfg.RetentionSweep, log.With("service", "retention"))
		return nil
	}
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, run := range []func(context.Context) error{val.Run, wr.Run, exp.Run, sweep, out.Run} {
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			if err := run(wctx); err != nil {
				log.Error("worker stopped", "err", err)
			}
		}()
	}

	rawStream, err := js.Stream(ctx, event.StreamRaw)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", event.StreamRaw, err)
	}
	raw := natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	a.raw = raw
	e := wire.NewServer(log)
	a.obs.serve(e)
	g := e.Group("", wire.Auth(a.keys), wire.RateLimit(wire.NewLimiter(cfg.RateLimit)))
	a.gw = gateway.New(raw, rawStream, a.reg, cfg.Gateway, log.With("service", "ingest"))
	a.gw.Register(g)
	search.New(a.obs.queryStore, a.ret).Register(g)
	organizations.New(a.ret, a.store, log.With("service", "queryapi")).Register(g)
	exp.Register(g)
	reconcile.NewAPI(js, a.store).Register(g)
	streamAPI := logstreams.New(js, out.Streams, out.Recorder)
	streamAPI.Register(g)
	alertapi.New(out.Rules, out.Streams, out.Recorder).Register(g)
	exp.RegisterDownload(e)
	links, err := portal.LoadLinks(ctx, js)
	if err != nil {
		return nil, err
	}
	portal.New(links, search.New(a.obs.queryStore, a.ret), exp, cfg.Portal, log.With("service", "portal")).Also(streamAPI.Viewer()).Register(e, g)
	return a, a.serve(e, cfg.Addr)
}

// Store is the ClickHouse store this process writes and reads (for tests and tools).
func (a *App) Store() *store.Store { return a.store }

// Retention is the organizations' retention settings as this process applies them.
func (a *App) Retention() *retention.Policies { return a.ret }

func (a *App) serve(e *echo.Echo, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	a.Addr = ln.Addr().String()
	a.http = &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// Close stops intake, lets the workers finish the batch in hand, and closes NATS and ClickHouse.
func (a *App) Close() error {
	var errs []error
	if a.obs != nil {
		a.obs.health.Stopping()
	}
	if a.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, a.http.Shutdown(ctx))
		cancel()
	}
	if a.raw != nil {
		a.raw.Close()
	}
	if a.cancel != nil {
		a.cancel()
		a.workers.Wait()
	}
	if a.reg != nil {
		a.reg.Close()
	}
	if a.keys != nil {
		a.keys.Close()
	}
	if a.ret != nil {
		a.ret.Close()
	}
	if a.nc != nil {
		errs = append(errs, natsx.DrainAndWait(a.nc, 10*time.Second))
	}
	if a.ns != nil {
		a.ns.Shutdown()
		a.ns.WaitForShutdown()
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}
