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
	"github.com/logbookhq/logbook/ingest/idempotency"
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/settle"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/export"
	"github.com/logbookhq/logbook/queryapi/organizations"
	"github.com/logbookhq/logbook/queryapi/portal"
	"github.com/logbookhq/logbook/queryapi/search"
	"github.com/logbookhq/logbook/validator/worker"
	"github.com/logbookhq/logbook/writer/batcher"
	"github.com/logbookhq/logbook/writer/reconcile"
)

// Config is the single-process configuration.
type Config struct {
	// DataDir holds everything kept on disk: DataDir/nats and DataDir/clickhouse. Default ./data.
	// A running App holds an exclusive lock on DataDir/logbook.lock.
	DataDir string
	// DataLockWait is how long Start waits for another Logbook to release DataDir (one still
	// shutting down) before it fails. Default 15 s; 0 fails at once.
	DataLockWait time.Duration
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
	// HTTP holds the listener's timeouts.
	HTTP wire.HTTPConfig
	// Reads are the ClickHouse limits of searches and exports.
	Reads store.ReadLimits
	// RateLimit is the per-API-key token bucket.
	RateLimit wire.RateLimitConfig
	// RetentionSweep is how often shortened retentions are enforced on older rows. Default 1 h.
	RetentionSweep time.Duration
}

// ConfigFromEnv reads the LOGBOOK_* variables documented in the README.
func ConfigFromEnv(env *config.Env) Config {
	gw, vc, wc := gateway.DefaultConfig(), worker.DefaultConfig(), batcher.DefaultConfig()
	gw.MaxBodyBytes = env.Int("LOGBOOK_MAX_BODY_BYTES", gw.MaxBodyBytes, 1<<10, 900<<10)
	wc.MaxRows = int(env.Int("LOGBOOK_BATCH_ROWS", int64(wc.MaxRows), 1, 1_000_000))
	wc.MaxWait = env.Duration("LOGBOOK_BATCH_WAIT", wc.MaxWait)
	vc.AckWait = env.Duration("LOGBOOK_VALIDATOR_ACK_WAIT", vc.AckWait)
	wc.AckWait = env.Duration("LOGBOOK_WRITER_ACK_WAIT", wc.AckWait)
	return Config{
		DataDir:        env.String("LOGBOOK_DATA_DIR", "./data"),
		DataLockWait:   env.DurationOrZero("LOGBOOK_DATA_LOCK_WAIT", DefaultDataLockWait),
		Addr:           env.Addr("LOGBOOK_ADDR", "127.0.0.1:8080"),
		APIKey:         env.String("LOGBOOK_API_KEY", ""),
		NATSListen:     env.String("LOGBOOK_NATS_LISTEN", ""),
		LibPath:        env.String("LOGBOOK_CHDB_LIB", ""),
		Limits:         natsx.LimitsFromEnv(env),
		Gateway:        gw,
		Valid:          vc,
		Writer:         wc,
		Export:         export.ConfigFromEnv(env),
		Portal:         portal.ConfigFromEnv(env),
		HTTP:           wire.HTTPFromEnv(env),
		Reads:          store.ReadLimitsFromEnv(env),
		RateLimit:      wire.RateLimitFromEnv(env),
		RetentionSweep: env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour),
	}
}

// DefaultDataLockWait is Config.DataLockWait's default: long enough for a Logbook that is shutting
// down on the same folder to finish.
const DefaultDataLockWait = 15 * time.Second

// App is a running single-process Logbook.
type App struct {
	// Addr is the address the HTTP server listens on.
	Addr string
	// GeneratedKey is the API key generated on this start, or "" (shown once, never stored).
	GeneratedKey string

	log     *slog.Logger
	lock    *dataLock
	ns      *server.Server
	nc      *nats.Conn
	store   *store.Store
	reg     *schema.Registry
	keys    *apikey.Verifier
	ret     *retention.Policies
	idem    *idempotency.Store
	gw      *gateway.Gateway
	http    *http.Server
	raw     *natsx.GroupCommit
	cancel  context.CancelFunc
	workers sync.WaitGroup
	obs     *instruments

	closeOnce sync.Once
	closeErr  error
}

// Start brings Logbook up and returns once it serves HTTP. Close stops it. The first thing it does
// is lock the data folder (waiting up to cfg.DataLockWait for another Logbook to let go of it); a
// step that fails closes everything the steps before it opened, in reverse order, and Start
// returns the step's error.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	a := &App{log: log}
	if err := a.start(ctx, cfg); err != nil {
		if cerr := a.Close(); cerr != nil {
			log.Warn("closing after a failed start-up was incomplete", "err", cerr)
		}
		return nil, err
	}
	return a, nil
}

// start runs the start-up steps, recording in a what each opened, for Close.
func (a *App) start(ctx context.Context, cfg Config) (err error) {
	log := a.log
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("failed to create data folder %s: %w", cfg.DataDir, err)
	}
	if a.lock, err = lockDataDir(ctx, cfg.DataDir, cfg.DataLockWait, log); err != nil {
		return err
	}
	a.ns, err = natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen})
	if err != nil {
		return err
	}
	nc, js, err := natsx.ConnectInProcess(a.ns, "logbook")
	if err != nil {
		return err
	}
	a.nc = nc
	if err := natsx.Prepare(ctx, js, cfg.Limits); err != nil {
		return err
	}
	if a.GeneratedKey, err = apikey.Ensure(ctx, js, cfg.APIKey); err != nil {
		return err
	}
	db, err := store.OpenEmbedded(cfg.LibPath, filepath.Join(cfg.DataDir, "clickhouse"))
	if err != nil {
		return err
	}
	a.store = store.New(db).WithLimits(cfg.Reads)
	if err := a.store.Migrate(ctx); err != nil {
		return err
	}
	a.obs = newInstruments(js, a.store, store.New(db.Priority()), log)
	if a.reg, err = schema.NewRegistry(ctx, js, log); err != nil {
		return err
	}
	if a.keys, err = apikey.NewVerifier(ctx, js, log); err != nil {
		return err
	}
	if a.ret, err = retention.Watch(ctx, js, log); err != nil {
		return err
	}
	if a.idem, err = idempotency.Open(ctx, nc, js); err != nil {
		return err
	}
	val, err := worker.New(ctx, js, a.reg, cfg.Valid, log.With("service", "validator"))
	if err != nil {
		return err
	}
	val.UseMetrics(a.obs.validator)
	wr, err := batcher.New(ctx, js, retention.Stamper{Store: a.obs.writerStore, Policies: a.ret}, cfg.Writer, log.With("service", "writer"))
	if err != nil {
		return err
	}
	exp, err := export.Open(ctx, js, a.obs.queryStore, a.ret, cfg.Export, log.With("service", "export"))
	if err != nil {
		return err
	}
	sweep := func(ctx context.Context) error {
		organizations.Sweep(ctx, a.ret, a.store, cfg.RetentionSweep, log.With("service", "retention"))
		return nil
	}
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, run := range []func(context.Context) error{val.Run, wr.Run, exp.Run, sweep} {
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			if err := run(wctx); err != nil {
				log.Error("worker stopped", "err", err)
			}
		}()
	}

	raw := natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	a.raw = raw
	e := wire.NewServer(log)
	a.obs.serve(e)
	g := e.Group("", wire.Auth(a.keys), wire.RateLimit(wire.NewLimiter(cfg.RateLimit)))
	a.gw = gateway.New(raw, a.reg, cfg.Gateway, log.With("service", "ingest"))
	a.gw.UseIdempotency(a.idem)
	a.gw.Register(g)
	stored := settle.New(js)
	search.New(a.obs.queryStore, a.ret).ReadsOwnWrites(stored).Register(g)
	organizations.New(a.ret, a.store, log.With("service", "queryapi")).Register(g)
	exp.Register(g)
	reconcile.NewAPI(js, a.store).Register(g)
	exp.RegisterDownload(e)
	links, err := portal.LoadLinks(ctx, js)
	if err != nil {
		return err
	}
	portal.New(links, search.New(a.obs.queryStore, a.ret).ReadsOwnWrites(stored), exp, cfg.Portal, log.With("service", "portal")).Register(e, g)
	return a.serve(e, cfg.Addr, cfg.HTTP)
}

// Store is the ClickHouse store this process writes and reads (for tests and tools).
func (a *App) Store() *store.Store { return a.store }

// Retention is the organizations' retention settings as this process applies them.
func (a *App) Retention() *retention.Policies { return a.ret }

func (a *App) serve(e *echo.Echo, addr string, hc wire.HTTPConfig) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	a.Addr = ln.Addr().String()
	a.http = wire.NewHTTPServer(e, hc)
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// Close stops intake, lets the workers finish the batch in hand, closes NATS and ClickHouse, and
// releases the data folder. It closes only what was opened (so it also undoes a failed start-up
// part way), and calling it again does nothing.
func (a *App) Close() error {
	a.closeOnce.Do(func() { a.closeErr = a.close() })
	return a.closeErr
}

func (a *App) close() error {
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
	if a.gw != nil {
		a.gw.Wait()
	}
	if a.idem != nil {
		a.idem.Close()
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
	errs = append(errs, a.lock.release())
	return errors.Join(errs...)
}
