package obs_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/wire"
)

var quiet = slog.New(slog.DiscardHandler)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// Readiness follows the real NATS server: ready while it answers, not once it is gone, and never
// again once the process is stopping. Liveness stays 200 throughout.
func TestAdminServesHealthReadinessAndMetrics(t *testing.T) {
	ns, js := natstest.New(t)
	reg := obs.NewRegistry()
	h := obs.NewHealth(quiet)
	h.Add("nats", obs.NATSCheck(js))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	adm, err := obs.StartAdmin(ctx, "127.0.0.1:0", reg, h, quiet)
	require.NoError(t, err)
	defer adm.Close()
	base := "http://" + adm.Addr

	code, body := get(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"ok","checks":{"nats":"ok"}}`, body)
	code, body = get(t, base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "go_goroutines")

	ns.Shutdown()
	ns.WaitForShutdown()
	code, body = get(t, base+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.JSONEq(t, `{"status":"unavailable","checks":{"nats":"failing"}}`, body)
	code, _ = get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code, "alive even when a dependency is not")

	_, err = obs.StartAdmin(ctx, adm.Addr, reg, h, quiet)
	require.ErrorContains(t, err, "admin address", "a taken port is a start-up error")
}

func TestStoppingTurnsReadinessOff(t *testing.T) {
	h := obs.NewHealth(quiet)
	h.Add("ok", func(context.Context) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	adm, err := obs.StartAdmin(ctx, "127.0.0.1:0", obs.NewRegistry(), h, quiet)
	require.NoError(t, err)
	defer adm.Close()
	code, _ := get(t, "http://"+adm.Addr+"/readyz")
	require.Equal(t, http.StatusOK, code)
	cancel()
	require.Eventually(t, func() bool {
		code, body := get(t, "http://"+adm.Addr+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"stopping"`)
	}, 5e9, 1e7)
}

func TestFailingCheckIsReportedByName(t *testing.T) {
	h := obs.NewHealth(quiet)
	h.Add("clickhouse", func(context.Context) error { return errors.New("connection refused 10.0.0.5:9000") })
	h.Add("nats", func(context.Context) error { return nil })
	rec := httptest.NewRecorder()
	h.ServeReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	var got map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	assert.Equal(t, map[string]any{"clickhouse": "failing", "nats": "ok"}, got["checks"])
	assert.NotContains(t, rec.Body.String(), "10.0.0.5", "causes go to the log, not to the caller")
}

// The consumer gauges read real JetStream state: a writer consumer with nothing consuming shows
// every published event as pending (the backlog while ClickHouse is down).
func TestJetStreamCollectorReportsBacklogAndStreamFill(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	_, err := js.CreateOrUpdateConsumer(ctx, event.StreamValid, jetstream.ConsumerConfig{
		Durable: event.ConsumerWriter, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		_, err := js.Publish(ctx, event.ValidSubject("org_a"), []byte(`{}`))
		require.NoError(t, err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(obs.NewJetStream("writer", js, []string{event.StreamValid},
		obs.Consumer{Stream: event.StreamValid, Name: event.ConsumerWriter},
		obs.Consumer{Stream: event.StreamValid, Name: "missing"}))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP writer_consumer_pending_messages Messages in the stream not yet delivered to the consumer (the backlog).
# TYPE writer_consumer_pending_messages gauge
writer_consumer_pending_messages{consumer="writer"} 3
# HELP writer_consumer_ack_pending_messages Messages delivered to the consumer and not yet acknowledged.
# TYPE writer_consumer_ack_pending_messages gauge
writer_consumer_ack_pending_messages{consumer="writer"} 0
# HELP writer_stream_messages Messages the stream holds.
# TYPE writer_stream_messages gauge
writer_stream_messages{stream="LOGBOOK_VALID"} 3
# HELP writer_stream_max_bytes The stream's byte cap (LOGBOOK_STREAM_MAX_BYTES); a full raw stream answers producers 503.
# TYPE writer_stream_max_bytes gauge
writer_stream_max_bytes{stream="LOGBOOK_VALID"} 2.147483648e+09
# HELP writer_jetstream_scrape_errors_total Scrapes that could not read a stream's or consumer's state from JetStream.
# TYPE writer_jetstream_scrape_errors_total counter
writer_jetstream_scrape_errors_total 1
`), "writer_consumer_pending_messages", "writer_consumer_ack_pending_messages", "writer_stream_messages",
		"writer_stream_max_bytes", "writer_jetstream_scrape_errors_total"))
	bytes, err := testutil.GatherAndCount(reg, "writer_stream_bytes")
	require.NoError(t, err)
	assert.Equal(t, 1, bytes)
}

func TestHTTPMiddlewareCountsByRouteAndStatusClass(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := wire.NewServer(quiet)
	e.Use(obs.HTTP(reg, "ingest"))
	e.POST("/audit_logs/events", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]bool{"success": true}) })
	e.GET("/audit_logs/events/:id", func(c echo.Context) error { return wire.NotFound("nope") })
	e.GET("/boom", func(c echo.Context) error { return errors.New("boom") })
	for _, r := range []struct{ method, path string }{
		{"POST", "/audit_logs/events"}, {"POST", "/audit_logs/events"}, {"GET", "/audit_logs/events/org_secret_1"},
		{"GET", "/audit_logs/events/org_secret_2"}, {"GET", "/boom"}, {"GET", "/healthz"},
	} {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(r.method, r.path, nil))
		if r.path == "/audit_logs/events/org_secret_1" {
			assert.Equal(t, http.StatusNotFound, rec.Code)
			assert.Contains(t, rec.Body.String(), `"not_found"`, "the envelope is still rendered")
		}
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ingest_http_requests_total HTTP requests answered, by route template, method and status class (2xx, 4xx, 5xx).
# TYPE ingest_http_requests_total counter
ingest_http_requests_total{code="2xx",method="POST",route="/audit_logs/events"} 2
ingest_http_requests_total{code="4xx",method="GET",route="/audit_logs/events/:id"} 2
ingest_http_requests_total{code="5xx",method="GET",route="/boom"} 1
`), "ingest_http_requests_total"))
	n, err := testutil.GatherAndCount(reg, "ingest_http_request_duration_seconds")
	require.NoError(t, err)
	assert.Equal(t, 3, n, "one series per route and method, never per id")
}

// A degraded check is reported by name without making the process unready.
func TestDegradedCheckKeepsReadiness(t *testing.T) {
	h := obs.NewHealth(quiet)
	h.Add("nats", func(context.Context) error { return nil })
	h.AddDegraded("backlog", func(context.Context) error { return errors.New("writer is 20m behind") })
	rec := httptest.NewRecorder()
	h.ServeReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.JSONEq(t, `{"status":"degraded","checks":{"nats":"ok","backlog":"degraded"}}`, rec.Body.String())
	h.Add("publish", func(context.Context) error { return errors.New("stalled") })
	rec = httptest.NewRecorder()
	h.ServeReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.JSONEq(t, `{"status":"unavailable","checks":{"nats":"ok","backlog":"degraded","publish":"failing"}}`, rec.Body.String())
}

// The backlog check reads real consumer state: an event left unsettled longer than the threshold
// degrades readiness until it is settled; the metrics show its age.
func TestBacklogAgeIsMeasuredAndReported(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamValid, jetstream.ConsumerConfig{
		Durable: event.ConsumerWriter, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	check := obs.BacklogCheck(js, 500*time.Millisecond, event.StreamValid)
	require.NoError(t, check(ctx), "an empty stream has no backlog")
	_, err = js.Publish(ctx, event.ValidSubject("org_a"), []byte(`{}`))
	require.NoError(t, err)
	require.NoError(t, check(ctx), "a young event is no alarm")
	time.Sleep(time.Second)
	err = check(ctx)
	require.ErrorContains(t, err, "consumer writer of LOGBOOK_VALID has left an event unsettled")

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(obs.NewJetStream("writer", js, []string{event.StreamValid},
		obs.Consumer{Stream: event.StreamValid, Name: event.ConsumerWriter}))
	ages := gaugeValues(t, reg, "writer_stream_oldest_unsettled_seconds", "writer_consumer_oldest_unsettled_seconds")
	assert.GreaterOrEqual(t, ages["writer_stream_oldest_unsettled_seconds"], 1.0)
	assert.Less(t, ages["writer_stream_oldest_unsettled_seconds"], 60.0)
	assert.Equal(t, ages["writer_stream_oldest_unsettled_seconds"], ages["writer_consumer_oldest_unsettled_seconds"])

	b, err := cons.Fetch(1)
	require.NoError(t, err)
	for m := range b.Messages() {
		require.NoError(t, m.DoubleAck(ctx))
	}
	require.NoError(t, check(ctx), "settled: no backlog")
	ages = gaugeValues(t, reg, "writer_stream_oldest_unsettled_seconds", "writer_consumer_oldest_unsettled_seconds")
	assert.Zero(t, ages["writer_stream_oldest_unsettled_seconds"])
	assert.Zero(t, ages["writer_consumer_oldest_unsettled_seconds"])
}

func gaugeValues(t *testing.T, reg *prometheus.Registry, names ...string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if slices.Contains(names, mf.GetName()) {
			require.Len(t, mf.GetMetric(), 1, mf.GetName())
			out[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	require.Len(t, out, len(names))
	return out
}

// A stream at 90% of its byte cap degrades readiness: a full raw stream answers 503, a full
// rejected stream holds up the validator.
func TestStreamFillIsReported(t *testing.T) {
	l := natsx.DefaultStreamLimits()
	l.MaxBytes = 1 << 20
	_, js := natstest.NewWithLimits(t, l)
	ctx := context.Background()
	check := obs.StreamFillCheck(js, event.StreamRaw, event.StreamRejected)
	require.NoError(t, check(ctx))
	for i := 0; i < 10; i++ {
		_, err := js.Publish(ctx, event.RejectedSubject("org_a"), make([]byte, 95<<10))
		require.NoError(t, err)
	}
	require.ErrorContains(t, check(ctx), "stream LOGBOOK_REJECTED holds")
}

// A check added with AddDegraded reports "degraded" without making the process unready; an
// ordinary failing check still wins.
func TestDegradedValidatorOutputKeepsReadiness(t *testing.T) {
	h := obs.NewHealth(quiet)
	failing := errors.New("valid stream refusing for 2m")
	var degraded error
	h.AddDegraded("validator_output", func(context.Context) error { return degraded })
	h.Add("nats", func(context.Context) error { return nil })
	serve := func() (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var got map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
		return rec.Code, got
	}
	code, got := serve()
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", got["status"])

	degraded = failing
	code, got = serve()
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "degraded", got["status"])
	assert.Equal(t, map[string]any{"validator_output": "degraded", "nats": "ok"}, got["checks"])

	h.Add("clickhouse", func(context.Context) error { return failing })
	code, got = serve()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "unavailable", got["status"])
}

func TestValidatorBacklogMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	v := obs.NewValidator(reg)
	v.Settled(3, 1, 2)
	v.OutputFailed("valid")
	v.OutputFailed("valid")
	v.OutputFailed("schemas")
	v.Waiting(7, time.Now().Add(-90*time.Second))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP validator_retrying_messages Raw messages the validator holds (in progress) because an output fails; they are retried until it recovers.
# TYPE validator_retrying_messages gauge
validator_retrying_messages 7
# HELP validator_output_errors_total Failed attempts of the validator on an output (valid, rejected: stream publishes; schemas: lookups; attempts: isolation markers; lookup: earlier copies). Each is retried; none rejects an event.
# TYPE validator_output_errors_total counter
validator_output_errors_total{output="schemas"} 1
validator_output_errors_total{output="valid"} 2
`), "validator_retrying_messages", "validator_output_errors_total"))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		switch mf.GetName() {
		case "validator_retry_oldest_seconds":
			assert.InDelta(t, 90, mf.GetMetric()[0].GetGauge().GetValue(), 5)
		case "validator_output_last_error_timestamp_seconds":
			assert.InDelta(t, float64(time.Now().Unix()), mf.GetMetric()[0].GetGauge().GetValue(), 5)
		}
	}
	v.Waiting(0, time.Time{})
	n, err := testutil.GatherAndCount(reg, "validator_retry_oldest_seconds")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}
