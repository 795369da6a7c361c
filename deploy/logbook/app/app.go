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
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/settle"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
	alertapi "github.com/logbookhq/logbook/queryapi/alerts"
	"github.com/logbookhq/logbook/queryapi/apikeys"
	"github.com/logbookhq/logbook/queryapi/export"
	"github.com/logbookhq/logbook/queryapi/logstreams"
	"github.com/logbookhq/logbook/queryapi/organizations"
	"github.com/logbookhq/logbook/queryapi/portal"
	"github.com/logbookhq/logbook/queryapi/search"
	"github.com/logbookhq/logbook/validator/redrive"
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
	// A running App holds an exclusive lock on DataDir/logbook.lock.
	DataDir string
	// DataLockWait is how long Start waits for another Logbook to release DataDir (one still
	// shutting down) before it fails. Default 15 s; 0 fails at once.
	DataLockWait time.Duration
	// Addr is the HTTP listen address. Default 127.0.0.1:8080; port 0 picks a free port.
	Addr string
	// APIKey, when set (LOGBOOK_API_KEY, at least 32 characters), is the API key named "env"; a
	// different key than at the previous start replaces (revokes) the previous one. When empty on
	// an installation's first start, a key named "default" is generated, only its hash is stored,
	// and it is reported once through App.GeneratedKey.
	APIKey string
	// KeyUsageFlush is how often the keys' last use is stored. Default apikey.DefaultUsageFlush.
	KeyUsageFlush time.Duration
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
	// HTTP holds the listener's timeouts.
	HTTP wire.HTTPConfig
	// Reads are the ClickHouse limits of searches and exports.
	Reads store.ReadLimits
	// Engine bounds the embedded engine's memory (LOGBOOK_ENGINE_MAX_MEMORY,
	// LOGBOOK_ENGINE_CACHE_BYTES); the zero value leaves the engine's own defaults.
	Engine store.EngineMemory
	// RateLimit is the per-API-key token bucket.
	RateLimit wire.RateLimitConfig
	// RetentionSweep is how often shortened retentions are enforced on older rows. Default 1 h.
	RetentionSweep time.Duration
	// BacklogAfter is how long an event may wait unsettled in the raw or valid stream
	// before /readyz reports "backlog": "degraded". Default 15 min.
	BacklogAfter time.Duration
	// Writers is how many writer loops run in the process (LOGBOOK_WRITERS, default 1). They share
	// the durable consumer and the batch ledger exactly as separate writer processes do, so more
	// than one is how the single process exercises, and tests, several writers.
	Writers int
	// StopMerges keeps every row ClickHouse stores visible until the data directory is deleted
	// (store.StopMerges), so duplicate checks cannot be fooled by a merge. For tests only; the
	// binary sets it from the failpoint store-stop-merges (LOGBOOK_FAILPOINTS=store-stop-merges=value:on).
	StopMerges bool
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
	wc.MaxBytes = int(env.Int("LOGBOOK_BATCH_BYTES", int64(wc.MaxBytes), 64<<10, 1<<30))
	wc.MaxWait = env.Duration("LOGBOOK_BATCH_WAIT", wc.MaxWait)
	vc.AckWait = env.Duration("LOGBOOK_VALIDATOR_ACK_WAIT", vc.AckWait)
	vc.Loops = int(env.Int("LOGBOOK_VALIDATORS", int64(vc.Loops), 1, 64))
	wc.AckWait = env.Duration("LOGBOOK_WRITER_ACK_WAIT", wc.AckWait)
	listen, natsURL, auth := natsFromEnv(env)
	return Config{
		DataDir:        env.String("LOGBOOK_DATA_DIR", "./data"),
		DataLockWait:   env.DurationOrZero("LOGBOOK_DATA_LOCK_WAIT", DefaultDataLockWait),
		Addr:           env.Addr("LOGBOOK_ADDR", "127.0.0.1:8080"),
		APIKey:         apikey.PresetFromEnv(env),
		NATSListen:     listen,
		NATSURL:        natsURL,
		NATSAuth:       auth,
		Roles:          RolesFromEnv(env),
		LibPath:        env.String("LOGBOOK_CHDB_LIB", ""),
		Limits:         natsx.LimitsFromEnv(env),
		Gateway:        gw,
		Valid:          vc,
		Writer:         wc,
		Export:         export.ConfigFromEnv(env),
		Portal:         portal.ConfigFromEnv(env),
		HTTP:           wire.HTTPFromEnv(env),
		Reads:          store.ReadLimitsFromEnv(env),
		Engine:         store.EngineMemoryFromEnv(env),
		RateLimit:      wire.RateLimitFromEnv(env),
		RetentionSweep: env.Duration("LOGBOOK_RETENTION_SWEEP", time.Hour),
		BacklogAfter:   env.Duration("LOGBOOK_BACKLOG_DEGRADED_AFTER", obs.DefaultBacklogDegradedAfter),
		Writers:        int(env.Int("LOGBOOK_WRITERS", 1, 1, 16)),
		StopMerges:     failpoint.Value("store-stop-merges") != "",
		LogStreams:     shipping.ConfigFromEnv(env),
		Alerts:         alerts.DefaultConfig(),
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
	echo    *echo.Echo
	reg     *schema.Registry
	keys    *apikey.Verifier
	ret     *retention.Policies
	gw      *gateway.Gateway
	http    *http.Server
	raw     gateway.Publisher
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

// start runs the start-up steps, recording in a what each opened, for Close. The roles say which
// parts run (all by default): the engine only for the writer and the query API, the schema
// registry for ingest and the validator, the API keys for the HTTP roles.
func (a *App) start(ctx context.Context, cfg Config) (err error) {
	log := a.log
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("failed to create data folder %s: %w", cfg.DataDir, err)
	}
	if a.lock, err = lockDataDir(ctx, cfg.DataDir, cfg.DataLockWait, log); err != nil {
		return err
	}
	roles := cfg.Roles
	if roles == (Roles{}) {
		roles = AllRoles
	}
	nc, js, err := a.connect(cfg, roles)
	if err != nil {
		return err
	}
	if err := natsx.Prepare(ctx, js, cfg.Limits); err != nil {
		return err
	}
	audit := selfaudit.New(js, log.With("service", "selfaudit"))
	var keyStore *apikey.Store
	if roles.HTTP() {
		if keyStore, err = apikey.Open(ctx, js); err != nil {
			return err
		}
		host, _ := os.Hostname()
		keyStore.BeforeChange(selfaudit.KeyChanges(audit, host))
		if a.GeneratedKey, err = keyStore.Ensure(ctx, cfg.APIKey); err != nil {
			return err
		}
	}
	var priority *store.Store // readiness: a session reads never hold
	if roles.Storage() {
		db, err := store.OpenEmbedded(cfg.LibPath, filepath.Join(cfg.DataDir, "clickhouse"), cfg.Engine.Args()...)
		if err != nil {
			return err
		}
		a.store = store.New(db).WithLimits(cfg.Reads)
		if err := a.store.Migrate(ctx); err != nil {
			return err
		}
		if cfg.StopMerges {
			log.Warn("merges stopped on the events table (a test setting): duplicates stay visible, parts are never merged")
			if err := a.store.StopMerges(ctx); err != nil {
				return err
			}
		}
		priority = a.store.On(db.Priority())
	}
	a.obs = newInstruments(js, a.store, priority, roles, cfg.BacklogAfter, log)
	if roles.Ingest || roles.Validator {
		if a.reg, err = schema.NewRegistry(ctx, js, log); err != nil {
			return err
		}
	}
	if roles.HTTP() {
		if a.keys, err = apikey.NewVerifier(ctx, js, log, apikey.VerifierConfig{UsageFlush: cfg.KeyUsageFlush}); err != nil {
			return err
		}
	}
	if roles.Storage() {
		if a.ret, err = retention.Watch(ctx, js, log); err != nil {
			return err
		}
	}
	var publishChecks []func(context.Context) error
	var runs []run
	if roles.Validator {
		var val *worker.Worker
		stage(StageValidator, func() { val, err = worker.New(ctx, js, a.reg, cfg.Valid, log.With("service", "validator")) })
		if err != nil {
			return err
		}
		val.UseMetrics(a.obs.validator)
		a.obs.health.AddDegraded("validator_output", val.OutputCheck())
		publishChecks = append(publishChecks, val.Check)
		runs = append(runs, run{StageValidator, val.Run})
	}
	if roles.Writer {
		// Beside the writer: log-stream delivery and alert rules, on the same valid stream.
		var out *outputs.Outputs
		stage(StageOutputs, func() {
			out, err = outputs.Open(ctx, js, a.store, outputs.Config{Replicas: cfg.Limits.Replicas,
				LogStreams: cfg.LogStreams, Alerts: cfg.Alerts}, a.obs.reg, log)
		})
		if err != nil {
			return err
		}
		runs = append(runs, run{StageOutputs, out.Run})
		for i := range max(cfg.Writers, 1) {
			var wr *batcher.Writer
			stage(StageWriter, func() {
				wr, err = batcher.New(ctx, js, a.obs.writerStore, cfg.Writer, log.With("service", "writer", "writer", i))
			})
			if err != nil {
				return err
			}
			wr.UseRetention(a.ret.Days)
			runs = append(runs, run{StageWriter, wr.Run})
		}
	}
	var exp *export.Service
	if roles.Query {
		stage(StageQuery, func() {
			exp, err = export.Open(ctx, js, a.obs.queryStore, a.ret, cfg.Export, log.With("service", "export"))
		})
		if err != nil {
			return err
		}
		sweep := func(ctx context.Context) error {
			organizations.Sweep(ctx, a.ret, a.store, cfg.RetentionSweep, log.With("service", "retention"))
			return nil
		}
		runs = append(runs, run{StageQuery, exp.Run}, run{StageOther, sweep})
	}
	// Settled events older than the keep time go; several trimmers (one per process) are harmless.
	runs = append(runs, run{StageOther, func(ctx context.Context) error {
		natsx.NewTrimmer(js, log.With("service", "trimmer"), event.StreamRaw, event.StreamValid).Run(ctx)
		return nil
	}})
	wctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for _, r := range runs {
		a.workers.Add(1)
		stage(r.stage, func() {
			go func() {
				defer a.workers.Done()
				if err := r.fn(wctx); err != nil {
					log.Error("worker stopped", "err", err)
				}
			}()
		})
	}

	var rawStream jetstream.Stream
	if roles.Ingest {
		if rawStream, err = js.Stream(ctx, event.StreamRaw); err != nil {
			return fmt.Errorf("failed to open stream %s: %w", event.StreamRaw, err)
		}
		stage(StageGateway, func() { a.raw = gateway.NewPublisher(nc, js) })
		publishChecks = append(publishChecks, a.raw.Check)
	}
	if len(publishChecks) > 0 {
		a.obs.health.Add("publish", func(ctx context.Context) error {
			var errs []error
			for _, check := range publishChecks {
				errs = append(errs, check(ctx))
			}
			return errors.Join(errs...)
		})
	}
	e := wire.NewServer(log)
	a.echo = e
	a.obs.serve(e)
	if !roles.HTTP() {
		return a.serve(e, cfg.Addr, cfg.HTTP) // health and metrics only
	}
	g := e.Group("", wire.Auth(a.keys), wire.RateLimit(wire.NewLimiter(cfg.RateLimit)))
	if roles.Ingest {
		a.gw = gateway.New(a.raw, rawStream, a.reg, cfg.Gateway, log.With("service", "ingest"))
		a.gw.UseAudit(audit)
		a.gw.Register(g)
	}
	keyAdmin := apikeys.New(keyStore, audit)
	keyAdmin.UseLocal(a.keys)
	apikeys.NewAPI(keyAdmin, log.With("service", "queryapi")).Register(g)
	if roles.Validator {
		rd, err := redrive.New(ctx, js, log.With("service", "validator"))
		if err != nil {
			return err
		}
		rd.UseAudit(audit)
		rd.Register(g)
	}
	if roles.Query {
		stored := settle.New(js)
		search.New(a.obs.queryStore, a.ret).ReadsOwnWrites(stored).Register(g)
		orgs := organizations.New(a.ret, a.store, log.With("service", "queryapi"))
		orgs.UseAudit(audit)
		orgs.Register(g)
		exp.UseAudit(audit)
		exp.Register(g)
		reconcile.NewAPI(js, a.store).Register(g)
		exp.RegisterDownload(e)
		links, err := portal.LoadLinks(ctx, js)
		if err != nil {
			return err
		}
		streams, err := logstreams.Open(ctx, js, cfg.Limits.Replicas)
		if err != nil {
			return err
		}
		rules, err := alertapi.Open(ctx, js, cfg.Limits.Replicas)
		if err != nil {
			return err
		}
		recorder := logstreams.Audited(audit)
		streamAPI := logstreams.New(js, streams, recorder)
		streamAPI.UseAccess(logstreams.KeyAccess())
		streamAPI.Register(g)
		rulesAPI := alertapi.New(rules, streams, recorder)
		rulesAPI.UseAccess(logstreams.KeyAccess())
		rulesAPI.Register(g)
		viewer := portal.New(links, search.New(a.obs.queryStore, a.ret).ReadsOwnWrites(stored), exp, cfg.Portal, log.With("service", "portal"))
		viewer.UseAudit(audit)
		viewer.Also(streamAPI.Viewer()).Register(e, g)
	}
	return a.serve(e, cfg.Addr, cfg.HTTP)
}

// connect starts the embedded NATS server (or, with cfg.NATSURL, reaches an external one) and
// connects to it with cfg.NATSAuth.
func (a *App) connect(cfg Config, roles Roles) (nc *nats.Conn, js jetstream.JetStream, err error) {
	opts, err := cfg.NATSAuth.Options()
	if err != nil {
		return nil, nil, err
	}
	if cfg.NATSURL != "" {
		stage(StageNATS, func() {
			nc, js, err = natsx.Connect(cfg.NATSURL, "logbook-"+strings.ReplaceAll(roles.String(), ",", "-"), opts...)
		})
	} else {
		stage(StageNATS, func() {
			a.ns, err = natsembed.Start(natsembed.Config{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen,
				User: cfg.NATSAuth.User, Password: cfg.NATSAuth.Password})
		})
		if err != nil {
			return nil, nil, err
		}
		stage(StageNATS, func() { nc, js, err = natsx.ConnectInProcess(a.ns, "logbook", opts...) })
	}
	a.nc = nc
	return nc, js, err
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
	stage(StageHTTP, func() {
		go func() {
			if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("http server stopped", "err", err)
			}
		}()
	})
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
