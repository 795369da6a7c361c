// Package app wires Logbook's four services into one process: an embedded nats-server (JetStream
// on disk, fsync always), the embedded ClickHouse engine on disk, and one HTTP listener serving
// every route of the gateway and the query API (events, schemas, exports, retention) on the same
// root paths. It is the only package importing all four. Told so (Config.Roles, Config.NATSURL),
// it runs only some of the parts against an external NATS: the storage node (writer and query on
// the embedded engine) of a deployment whose intake and validators run as separate services.
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
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/ingest/idempotency"
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/schema"
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
	DataDir string
	// Addr is the HTTP listen address. Default 127.0.0.1:8080; port 0 picks a free port.
	Addr string
	// APIKey, when set, is accepted as an API key. When empty and no key exists yet, one is
	// generated, only its hash is stored, and it is reported once through Started.APIKey.
	APIKey string
	// NATSListen optionally exposes the embedded NATS server over TCP (host:port; an empty host is
	// loopback). Off loopback it needs NATSAuth's user and password.
	NATSListen string
	// NATSURL, when set, is an external NATS server or cluster used instead of the embedded one.
	NATSURL string
	// NATSAuth are the credentials every NATS client must present: the embedded server requires
	// its User and Password when set; an external one gets whichever way NATSAuth holds.
	NATSAuth natsx.Auth
	// Roles are the parts this process runs; the zero value means AllRoles.
	Roles Roles
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
	listen, natsURL, auth := natsFromEnv(env)
	return Config{
		DataDir:        env.String("LOGBOOK_DATA_DIR", "./data"),
		Addr:           env.Addr("LOGBOOK_ADDR", "127.0.0.1:8080"),
		APIKey:         env.String("LOGBOOK_API_KEY", ""),
		NATSListen:     listen,
		NATSURL:        natsURL,
		NATSAuth:       auth,
		Roles:          RolesFromEnv(env),
		LibPath:        env.String("LOGBOOK_CHDB_LIB", ""),
		Limits:         natsx.LimitsFromEnv(env),
		Gateway:        gw,
		Valid:          vc,
		Writer:         wc,
		Export:         ec,
		Portal:         portal.ConfigFromEnv(env),
		RateLimit:      wire.RateLimitFromEnv(env),
		RetentionSweep: env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour),
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
	idem    *idempotency.Store
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
	roles := cfg.Roles
	if roles == (Roles{}) {
		roles = AllRoles
	}
	nc, js, err := a.connect(cfg, roles)
	if err != nil {
		return nil, err
	}
	if err := natsx.Prepare(ctx, js, cfg.Limits); err != nil {
		return nil, err
	}
	if roles.HTTP() {
		if a.GeneratedKey, err = apikey.Ensure(ctx, js, cfg.APIKey); err != nil {
			return nil, err
		}
	}
	if roles.Storage() {
		db, err := store.OpenEmbedded(cfg.LibPath, filepath.Join(cfg.DataDir, "clickhouse"))
		if err != nil {
			return nil, err
		}
		a.store = store.New(db)
		if err := a.store.Migrate(ctx); err != nil {
			return nil, err
		}
	}
	a.obs = newInstruments(js, a.store, roles, log)
	if roles.Ingest || roles.Validator {
		if a.reg, err = schema.NewRegistry(ctx, js, log); err != nil {
			return nil, err
		}
	}
	if roles.HTTP() {
		if a.keys, err = apikey.NewVerifier(ctx, js, log); err != nil {
			return nil, err
		}
	}
	if roles.Storage() {
		if a.ret, err = retention.Watch(ctx, js, log); err != nil {
			return nil, err
		}
	}
	if roles.Ingest {
		if a.idem, err = idempotency.Open(ctx, nc, js); err != nil {
			return nil, err
		}
	}
	var runs []func(context.Context) error
	if roles.Validator {
		val, err := worker.New(ctx, js, a.reg, cfg.Valid, log.With("service", "validator"))
		if err != nil {
			return nil, err
		}
		val.UseMetrics(a.obs.validator)
		runs = append(runs, val.Run)
	}
	if roles.Writer {
		wr, err := batcher.New(ctx, js, retention.Stamper{Store: a.obs.writerStore, Policies: a.ret}, cfg.Writer, log.With("service", "writer"))
		if err != nil {
			return nil, err
		}
		runs = append(runs, wr.Run)
	}
	var exp *export.Service
	if roles.Query {
		if exp, err = export.Open(ctx, js, a.obs.queryStore, a.ret, cfg.Export, log.With("service", "export")); err != nil {
			return nil, err
		}
		sweep := func(ctx context.Context) error {
			organizations.Sweep(ctx, a.ret, a.store, cfg.RetentionSweep, log.With("service", "retention"))
			return nil
		}
		runs = append(runs, exp.Run, sweep)
	}
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, run := range runs {
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			if err := run(wctx); err != nil {
				log.Error("worker stopped", "err", err)
			}
		}()
	}

	if roles.Ingest {
		a.raw = natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	}
	e := wire.NewServer(log)
	a.obs.serve(e)
	if !roles.HTTP() {
		return a, a.serve(e, cfg.Addr) // health and metrics only
	}
	g := e.Group("", wire.Auth(a.keys), wire.RateLimit(wire.NewLimiter(cfg.RateLimit)))
	if roles.Ingest {
		a.gw = gateway.New(a.raw, a.reg, cfg.Gateway, log.With("service", "ingest"))
		a.gw.UseIdempotency(a.idem)
		a.gw.Register(g)
	}
	if roles.Query {
		search.New(a.obs.queryStore, a.ret).Register(g)
		organizations.New(a.ret, a.store, log.With("service", "queryapi")).Register(g)
		exp.Register(g)
		reconcile.NewAPI(js, a.store).Register(g)
		exp.RegisterDownload(e)
		links, err := portal.LoadLinks(ctx, js)
		if err != nil {
			return nil, err
		}
		portal.New(links, search.New(a.obs.queryStore, a.ret), exp, cfg.Portal, log.With("service", "portal")).Register(e, g)
	}
	return a, a.serve(e, cfg.Addr)
}

// connect starts the embedded NATS server and connects to it in-process, or connects to the
// external one at cfg.NATSURL, with cfg.NATSAuth's credentials either way.
func (a *App) connect(cfg Config, roles Roles) (nc *nats.Conn, js jetstream.JetStream, err error) {
	opts, err := cfg.NATSAuth.Options()
	if err != nil {
		return nil, nil, err
	}
	if cfg.NATSURL != "" {
		nc, js, err = natsx.Connect(cfg.NATSURL, "logbook-"+strings.ReplaceAll(roles.String(), ",", "-"), opts...)
	} else {
		a.ns, err = natsembed.Start(natsembed.Config{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen,
			User: cfg.NATSAuth.User, Password: cfg.NATSAuth.Password})
		if err != nil {
			return nil, nil, err
		}
		nc, js, err = natsx.ConnectInProcess(a.ns, "logbook", opts...)
	}
	a.nc = nc
	return nc, js, err
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
	return errors.Join(errs...)
}
