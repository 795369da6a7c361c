package logstream_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// webhookReceiver verifies each request as a Standard Webhooks receiver does (the reference
// library: signature over id, timestamp and body, 5-minute tolerance) and reads the JSON array.
func webhookReceiver(t *testing.T, secret string) *receiver {
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	return startReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) (string, []receivedEvent, bool) {
		if err := wh.Verify(body, r.Header); err != nil || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusUnauthorized)
			return "", nil, false
		}
		var events []struct {
			Object string `json:"object"`
			ID     string `json:"id"`
			Org    string `json:"organization_id"`
			Action string `json:"action"`
		}
		if json.Unmarshal(body, &events) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return "", nil, false
		}
		out := make([]receivedEvent, len(events))
		for i, e := range events {
			if e.Object != "audit_log_event" || e.Action == "" {
				w.WriteHeader(http.StatusBadRequest)
				return "", nil, false
			}
			out[i] = receivedEvent{e.ID, e.Org}
		}
		w.WriteHeader(http.StatusNoContent)
		return r.Header.Get("webhook-id"), out, true
	})
}

// An organization's events reach an HTTP endpoint signed, in order, exactly that organization's,
// through the endpoint being killed and restarted mid-stream: nothing missing, and a repeat only
// where a batch went unacknowledged (sent again whole, under the same webhook-id).
func TestHTTPStreamThroughReceiverOutage(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	rc := webhookReceiver(t, secret)
	org, other := storetest.NewOrg(t), storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org,
		Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: rc.url() + "/hook"},
		Batch:       logstream.Batch{MaxEvents: 40, LingerMS: 20}},
		logstream.Secrets{SigningSecret: secret, Headers: map[string]string{"Authorization": "Bearer receiver-token"}})
	e.startManager(t, testConfig())

	var want []string
	phase := func(n int) {
		mine, theirs := newRecords(org, n), newRecords(other, n)
		for i := range mine {
			publishValid(t, e.js, mine[i:i+1])
			publishValid(t, e.js, theirs[i:i+1])
		}
		want = append(want, ids(mine)...)
	}
	phase(150)
	rc.waitDistinct(t, 100)
	rc.kill()
	phase(150)
	require.Eventually(t, func() bool { return e.status(t, s.ID).FailedAttempts >= 2 }, waitFor, tick)
	st := e.status(t, s.ID)
	assert.Equal(t, logstream.HealthRetrying, st.Health)
	assert.Contains(t, st.LastError, "webhook")
	rc.restart()
	phase(100)
	rc.waitDistinct(t, len(want))
	checkDelivery(t, rc, want)

	reqs, _ := rc.snapshot()
	for _, r := range reqs {
		assert.Equal(t, "Bearer receiver-token", r.Header.Get("Authorization"), "custom header sent")
		assert.LessOrEqual(t, len(r.Events), 40, "batch size bound")
		for _, ev := range r.Events {
			assert.Equal(t, org, ev.Org, "only the stream's organization")
		}
	}
	require.Eventually(t, func() bool {
		st := e.status(t, s.ID)
		return st.Health == logstream.HealthOK && st.Delivered >= uint64(len(want)) && st.FailingSince == nil
	}, waitFor, tick, "status %+v", e.status(t, s.ID))
}

// A delivery worker killed while its batch is unacknowledged (the destination down), then started
// again, delivers everything in order: the consumer is reset to its ack floor, so the held batch
// (still pending in JetStream until its ack wait ends) cannot be overtaken by newer events.
func TestHTTPStreamWorkerRestartKeepsOrder(t *testing.T) {
	e := newEnv(t)
	secret := logstream.NewSigningSecret()
	rc := webhookReceiver(t, secret)
	org := storetest.NewOrg(t)
	e.createStream(t, logstream.Stream{OrganizationID: org,
		Destination: logstream.Destination{Type: logstream.TypeHTTP, URL: rc.url()},
		Batch:       logstream.Batch{MaxEvents: 25, LingerMS: 10}}, logstream.Secrets{SigningSecret: secret})
	_, crash := e.startManagerConn(t, testConfig())
	first := newRecords(org, 60)
	publishValid(t, e.js, first)
	rc.waitDistinct(t, 60)
	rc.answer(http.StatusServiceUnavailable, nil)
	second := newRecords(org, 60)
	publishValid(t, e.js, second[:30])
	time.Sleep(300 * time.Millisecond) // a batch of the second lot is in hand, failing
	crash()
	publishValid(t, e.js, second[30:])
	rc.answer(0, nil)
	e.startManager(t, testConfig())
	rc.waitDistinct(t, 120)
	assert.Equal(t, append(ids(first), ids(second)...), rc.distinct(), "in order after the restart")
}
