// Package obs is what every Logbook service shows its operators: a Prometheus registry, liveness
// (/healthz) and readiness (/readyz) with checks of the dependencies, HTTP request metrics, JetStream
// backlog gauges, and the admin listener that serves them (LOGBOOK_ADMIN_ADDR, default 127.0.0.1:9090).
//
// Metric names follow <service>_<thing>_<unit> (ingest_http_requests_total,
// writer_consumer_pending_messages). No label takes unbounded values: routes are echo's route
// templates, status codes are classes (2xx, 4xx, 5xx), and no metric is labelled by organization.
package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAdminAddr is where a separate service serves /metrics, /healthz and /readyz: loopback
// only, unless LOGBOOK_ADMIN_ADDR says otherwise (a container sets :9090 and publishes it on the
// host's loopback).
const DefaultAdminAddr = "127.0.0.1:9090"

// NewRegistry returns a registry holding the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves GET /metrics (the registry), /healthz (alive) and /readyz (h's checks).
func Handler(reg *prometheus.Registry, h *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(reg))
	mux.HandleFunc("GET /healthz", h.ServeLive)
	mux.HandleFunc("GET /readyz", h.ServeReady)
	return mux
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	// A collector that fails (JetStream away) leaves its series out instead of failing the scrape.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Registry: reg})
}

// Register serves /metrics and /readyz on e as well, without authentication (the single-process
// mode, whose /healthz wire.NewServer already serves).
func Register(e *echo.Echo, reg *prometheus.Registry, h *Health) {
	e.GET("/metrics", echo.WrapHandler(metricsHandler(reg)))
	e.GET("/readyz", echo.WrapHandler(http.HandlerFunc(h.ServeReady)))
}

// Admin is a running admin listener.
type Admin struct {
	// Addr is the address it listens on.
	Addr string
	// Registry and Health are what it serves.
	Registry *prometheus.Registry
	Health   *Health
	srv      *http.Server
	done     chan struct{}
}

// StartService starts a separate service's admin listener on addr (LOGBOOK_ADMIN_ADDR): a new
// registry, and readiness that checks js's NATS connection; add the service's own checks and
// metrics to the returned Admin.
func StartService(ctx context.Context, addr string, js jetstream.JetStream, log *slog.Logger) (*Admin, error) {
	h := NewHealth(log)
	h.Add("nats", NATSCheck(js))
	return StartAdmin(ctx, addr, NewRegistry(), h, log)
}

// StartAdmin listens on addr and serves Handler(reg, h) until Close. When ctx ends, readiness
// turns false at once (load balancers stop sending work) while the listener keeps answering, so
// the process can finish in-flight work before it exits.
func StartAdmin(ctx context.Context, addr string, reg *prometheus.Registry, h *Health, log *slog.Logger) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on admin address %s: %w", addr, err)
	}
	a := &Admin{Addr: ln.Addr().String(), Registry: reg, Health: h, done: make(chan struct{}),
		srv: &http.Server{Handler: Handler(reg, h), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", "addr", a.Addr, "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			h.Stopping()
		case <-a.done:
		}
	}()
	return a, nil
}

// Close stops the admin listener.
func (a *Admin) Close() error {
	close(a.done)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
}
