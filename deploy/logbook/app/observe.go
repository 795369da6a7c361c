package app

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/store/storemetrics"
)

// instruments are the single process's metrics and health: one registry holding the same metric
// names the four separate services expose (ingest_…, validator_…, writer_…, queryapi_…), served
// with /readyz on the main address.
type instruments struct {
	reg    *prometheus.Registry
	health *obs.Health
	// writerStore and queryStore are the engine seen through the writer's and the query API's
	// metrics decorators; the writer's runs on the engine's priority session, so reads never hold
	// up its INSERTs.
	writerStore, queryStore *store.Store
	validator               *obs.Validator
}

// newInstruments takes the engine twice: st (reads, on the read sessions) and priority (the writer
// and the readiness check, on the priority session).
func newInstruments(js jetstream.JetStream, st, priority *store.Store, log *slog.Logger) *instruments {
	reg := obs.NewRegistry()
	h := obs.NewHealth(log)
	h.Add("nats", obs.NATSCheck(js))
	h.Add("clickhouse", priority.Ping)
	reg.MustRegister(
		obs.NewJetStream("ingest", js, []string{event.StreamRaw}),
		obs.NewJetStream("validator", js, []string{event.StreamRejected},
			obs.Consumer{Stream: event.StreamRaw, Name: event.ConsumerValidator}),
		obs.NewJetStream("writer", js, []string{event.StreamValid},
			obs.Consumer{Stream: event.StreamValid, Name: event.ConsumerWriter}),
	)
	return &instruments{
		reg: reg, health: h, validator: obs.NewValidator(reg),
		writerStore: priority.Decorate(storemetrics.Decorator(reg, "writer")),
		queryStore:  st.Decorate(storemetrics.Decorator(reg, "queryapi")),
	}
}

// serve counts e's requests by service and adds GET /metrics and /readyz to it.
func (in *instruments) serve(e *echo.Echo) {
	e.Use(obs.HTTPBy(in.reg, serviceOf, "ingest", "queryapi"))
	obs.Register(e, in.reg, in.health)
}

// serviceOf names the service a route belongs to when run separately: creating events (one or in
// bulk) and the schema routes are the gateway's (ingest), everything else is the query API's.
func serviceOf(c echo.Context) string {
	p := c.Path()
	if (c.Request().Method == http.MethodPost && strings.HasPrefix(p, "/audit_logs/events")) || strings.Contains(p, "/audit_logs/actions") {
		return "ingest"
	}
	return "queryapi"
}
