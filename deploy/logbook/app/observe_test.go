package app

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
)

func plainGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

// The single process serves /healthz, /readyz and /metrics on its main address without a key, and
// the metrics follow an event through every stage under the separate services' names.
func TestOperatorEndpointsOnTheMainAddress(t *testing.T) {
	a := startT(t)
	base := "http://" + a.Addr
	code, body := plainGet(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	code, body = plainGet(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"ok","checks":{"nats":"ok","clickhouse":"ok","publish":"ok","backlog":"ok","streams":"ok","validator_output":"ok"}}`, body)

	c := a.client(t, testKey)
	const org = "org_metrics_7f3a"
	c.emit(org, time.Now().Add(-time.Minute), 1)
	c.emit(org, time.Now().Add(-time.Minute), 2)
	r := c.do("POST", "/audit_logs/events", []byte(`{"organization_id":"`+org+`"}`))
	require.Equal(t, http.StatusUnprocessableEntity, r.status)
	c.waitFor(org, 2)

	var metrics string
	require.Eventually(t, func() bool {
		code, metrics = plainGet(t, base+"/metrics")
		return code == http.StatusOK && strings.Contains(metrics, `writer_consumer_ack_pending_messages{consumer="writer"} 0`)
	}, 10*time.Second, 20*time.Millisecond)
	for _, want := range []string{
		`ingest_http_requests_total{code="2xx",method="POST",route="/audit_logs/events"} 2`,
		`ingest_http_requests_total{code="4xx",method="POST",route="/audit_logs/events"} 1`,
		`queryapi_http_requests_total{code="2xx",method="GET",route="/audit_logs/events"}`,
		`queryapi_http_request_duration_seconds_bucket{method="GET",route="/audit_logs/events"`,
		`validator_events_total{result="valid"} 3`, // the two events and the env key's creation (org_logbook)
		`validator_events_total{result="rejected"} 0`,
		`validator_consumer_pending_messages{consumer="validator"} 0`,
		`writer_consumer_pending_messages{consumer="writer"} 0`,
		`writer_batch_rows_sum 3`,
		`writer_insert_duration_seconds_count`,
		`writer_insert_errors_total 0`,
		`queryapi_query_duration_seconds_count{op="query"}`,
		`ingest_stream_max_bytes{stream="LOGBOOK_RAW"} 2.147483648e+09`,
		`writer_stream_messages{stream="LOGBOOK_VALID"} 3`,
		`validator_stream_messages{stream="LOGBOOK_REJECTED"} 0`,
		`writer_consumer_oldest_unsettled_seconds{consumer="writer"} 0`,
		`validator_consumer_oldest_unsettled_seconds{consumer="validator"} 0`,
		`ingest_stream_oldest_unsettled_seconds{stream="LOGBOOK_RAW"} 0`,
		`writer_stream_oldest_unsettled_seconds{stream="LOGBOOK_VALID"} 0`,
		`go_goroutines`,
	} {
		assert.Contains(t, metrics, want)
	}
	assert.NotContains(t, metrics, org, "no metric is labelled by organization")
	assert.NotContains(t, metrics, `route="/metrics"`, "scrapes are not counted as traffic")
}

// Closing while producers are sending loses no event that was answered 200: the gateway stops
// accepting, finishes the requests in flight, and what is in the streams is stored after a restart.
func TestShutdownLosesNoAcceptedEvent(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir, testKey)
	const org = "org_shutdown"
	url := "http://" + a.Addr + "/audit_logs/events"
	var accepted, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", url, bytes.NewReader(eventBody(org, "user.signed_in", time.Now().Add(-time.Minute), map[string]any{"w": w, "i": i})))
				req.Header.Set("Authorization", "Bearer "+testKey)
				req.Header.Set("Idempotency-Key", fmt.Sprintf("shutdown-%d-%d", w, i))
				sent.Add(1)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the listener is closed
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					accepted.Add(1)
				}
			}
		}()
	}
	require.Eventually(t, func() bool { return accepted.Load() >= 200 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, a.Close())
	close(stop)
	wg.Wait()
	n := int(accepted.Load())
	t.Logf("%d events accepted before and during shutdown", n)

	b := start(t, dir, testKey)
	defer func() { require.NoError(t, b.Close()) }()
	c := b.client(t, testKey)
	var got int
	require.Eventually(t, func() bool {
		r := c.list("organization_id=" + org + "&limit=1000")
		data, _ := r.body["data"].([]any)
		got = len(data)
		return got >= n
	}, 30*time.Second, 50*time.Millisecond, "accepted events were lost: %d of %d stored", got, n)
	assert.LessOrEqual(t, got, int(sent.Load()), "nothing stored twice")
}

// Bad values of the operator-facing variables stop the start with an error naming each one.
func TestBadConfigurationNamesTheVariables(t *testing.T) {
	env := config.FromMap(map[string]string{
		"LOGBOOK_ADDR":            "localhost",
		"LOGBOOK_PUBLIC_URL":      "audit.example.com",
		"LOGBOOK_PORTAL_LINK_TTL": "48h",
		"LOGBOOK_BATCH_WAIT":      "soon",
	})
	_ = ConfigFromEnv(env)
	err := env.Err()
	require.Error(t, err)
	for _, name := range []string{`LOGBOOK_ADDR="localhost"`, `LOGBOOK_PUBLIC_URL="audit.example.com"`,
		`LOGBOOK_PORTAL_LINK_TTL="48h0m0s": must be at most 24h`, `LOGBOOK_BATCH_WAIT="soon"`} {
		assert.Contains(t, err.Error(), name)
	}
}
