package app

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

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
// with /readyz on the main address. Readiness: nats, clickhouse and publish (the group committers
// get answers) fail it; backlog (an event unsettled too long) and streams (a stream 90% full) only
// degrade it.
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
// and the readiness check, on the priority sessions); both nil when this process holds no engine.
func newInstruments(js jetstream.JetStream, st, priority *store.Store, roles Roles, backlogAfter time.Duration, log *slog.Logger) *instruments {
	reg := obs.NewRegistry()
	h := obs.NewHealth(log)
	h.Add("nats", obs.NATSCheck(js))
	h.AddDegraded("backlog", obs.BacklogCheck(js, backlogAfter, event.StreamRaw, event.StreamValid))
	h.AddDegraded("streams", obs.StreamFillCheck(js, event.StreamRaw, event.StreamValid, event.StreamRejected))
	in := &instruments{reg: reg, health: h}
	if roles.Ingest {
		reg.MustRegister(obs.NewJetStream("ingest", js, []string{event.StreamRaw}))
	}
	if roles.Validator {
		reg.MustRegister(obs.NewJetStream("validator", js, []string{event.StreamRejected},
			obs.Consumer{Stream: event.StreamRaw, Name: event.ConsumerValidator}))
		in.validator = obs.NewValidator(reg)
	}
	if roles.Writer {
		reg.MustRegister(obs.NewJetStream("writer", js, []string{event.StreamValid},
			obs.Consumer{Stream: event.StreamValid, Name: event.ConsumerWriter}))
	}
	if priority != nil {
		h.Add("clickhouse", priority.Ping)
	}
	if roles.Writer {
		in.writerStore = priority.Decorate(storemetrics.Decorator(reg, "writer"))
	}
	if roles.Query {
		in.queryStore = st.Decorate(storemetrics.Decorator(reg, "queryapi"))
	}
	return in
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
