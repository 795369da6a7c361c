package logstream_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/storetest"
	ls "github.com/logbookhq/logbook/writer/logstream"
)

// A destination that keeps refusing (401) is retried, and once it has failed for FailingAfter the
// stream is failing — in its status and on /metrics — with the refusal as last error; nothing is
// dropped: when the destination accepts again, every event arrives and the stream is ok.
func TestRefusingDestinationIsMarkedFailing(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	rc := webhookReceiver(t, secret)
	rc.answer(http.StatusUnauthorized, nil)
	org := storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org,
		Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: rc.url()},
		Batch:       logstream.Batch{MaxEvents: 10, LingerMS: 10}}, logstream.Secrets{SigningSecret: secret})
	cfg := testConfig()
	cfg.FailingAfter = time.Second
	m, err := ls.NewManager(e.js, e.st, e.db, cfg, quietLog())
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	reg.MustRegister(ls.NewCollector(e.js, e.st, m))
	e.runManager(t, m)

	recs := newRecords(org, 15)
	publishValid(t, e.js, recs)
	require.Eventually(t, func() bool { return e.status(t, s.ID).Health == logstream.HealthFailing }, waitFor, tick)
	st := e.status(t, s.ID)
	assert.Contains(t, st.LastError, "401")
	assert.NotNil(t, st.FailingSince)
	expect := func(health string) string {
		return "# HELP logstream_failing 1 while the log stream is failing (failures for longer than LOGBOOK_LOG_STREAM_FAILING_AFTER).\n" +
			"# TYPE logstream_failing gauge\n" +
			`logstream_failing{log_stream="` + s.ID + `"} ` + health + "\n"
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expect("1")), "logstream_failing"))
	lag, err := testutil.GatherAndCount(reg, "logstream_lag_events")
	require.NoError(t, err)
	assert.Equal(t, 1, lag)

	rc.answer(0, nil)
	rc.waitDistinct(t, 15)
	assert.Equal(t, ids(recs), rc.distinct())
	require.Eventually(t, func() bool { return e.status(t, s.ID).Health == logstream.HealthOK }, waitFor, tick)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expect("0")), "logstream_failing"))
}
