package logstream_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// splunkReceiver is an HTTP Event Collector as Splunk documents it: POST
// /services/collector/event, "Authorization: Splunk <token>", envelopes concatenated, each with a
// numeric time and a non-empty event; {"text":"Success","code":0} on success.
func splunkReceiver(t *testing.T, token string) *receiver {
	return startReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) (string, []receivedEvent, bool) {
		if r.URL.Path != "/services/collector/event" || r.Header.Get("Authorization") != "Splunk "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"text":"Invalid token","code":4}`))
			return "", nil, false
		}
		d := json.NewDecoder(bytes.NewReader(body))
		var out []receivedEvent
		for d.More() {
			var env struct {
				Time       json.Number `json:"time"`
				Source     string      `json:"source"`
				SourceType string      `json:"sourcetype"`
				Index      string      `json:"index"`
				Event      struct {
					ID, Organization_ID, Occurred_At string
				} `json:"event"`
			}
			if err := d.Decode(&env); err != nil || env.Event.ID == "" || env.Source != "logbook" || env.Index != "audit" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"text":"Invalid data format","code":6}`))
				return "", nil, false
			}
			sec, err := env.Time.Float64()
			occurred, _ := time.Parse(time.RFC3339Nano, env.Event.Occurred_At)
			if err != nil || int64(sec*1000+0.5) != occurred.UnixMilli() {
				w.WriteHeader(http.StatusBadRequest)
				return "", nil, false
			}
			out = append(out, receivedEvent{env.Event.ID, env.Event.Organization_ID})
		}
		_, _ = w.Write([]byte(`{"text":"Success","code":0}`))
		return "", out, true
	})
}

// datadogReceiver is the logs intake v2: POST /api/v2/logs, DD-API-KEY, a gzip JSON array of at
// most 1,000 entries with ddsource, service and a message; 202.
func datadogReceiver(t *testing.T, key string) *receiver {
	return startReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) (string, []receivedEvent, bool) {
		if r.URL.Path != "/api/v2/logs" || r.Header.Get("DD-API-KEY") != key {
			w.WriteHeader(http.StatusForbidden)
			return "", nil, false
		}
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return "", nil, false
			}
			body, _ = io.ReadAll(zr)
		}
		var entries []struct{ Ddsource, Service, Ddtags, Message string }
		if json.Unmarshal(body, &entries) != nil || len(entries) > 1000 {
			w.WriteHeader(http.StatusBadRequest)
			return "", nil, false
		}
		var out []receivedEvent
		for _, e := range entries {
			var ev struct{ ID, Organization_ID string }
			if e.Ddsource != "logbook" || e.Service != "audit-logs" || json.Unmarshal([]byte(e.Message), &ev) != nil ||
				!strings.Contains(e.Ddtags, "organization_id:"+ev.Organization_ID) || !strings.HasPrefix(e.Ddtags, "env:test,") {
				w.WriteHeader(http.StatusBadRequest)
				return "", nil, false
			}
			out = append(out, receivedEvent{ev.ID, ev.Organization_ID})
		}
		w.WriteHeader(http.StatusAccepted)
		return "", out, true
	})
}

// otlpReceiver is an OTLP/HTTP logs endpoint taking the JSON encoding: POST /v1/logs,
// resourceLogs → scopeLogs → logRecords, 64-bit times as strings.
func otlpReceiver(t *testing.T) *receiver {
	return startReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) (string, []receivedEvent, bool) {
		if r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Scope-OrgID") != "tenant-1" {
			w.WriteHeader(http.StatusBadRequest)
			return "", nil, false
		}
		type kv struct {
			Key   string
			Value struct{ StringValue string }
		}
		var req struct {
			ResourceLogs []struct {
				Resource  struct{ Attributes []kv }
				ScopeLogs []struct {
					LogRecords []struct {
						TimeUnixNano, ObservedTimeUnixNano, SeverityText, EventName string
						SeverityNumber                                              int
						Attributes                                                  []kv
						Body                                                        struct{ KvlistValue struct{ Values []kv } }
					}
				}
			}
		}
		if json.Unmarshal(body, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return "", nil, false
		}
		var out []receivedEvent
		for _, rl := range req.ResourceLogs {
			attr := func(as []kv, k string) string {
				for _, a := range as {
					if a.Key == k {
						return a.Value.StringValue
					}
				}
				return ""
			}
			org := attr(rl.Resource.Attributes, "organization.id")
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					if _, err := strconv.ParseInt(lr.TimeUnixNano, 10, 64); err != nil || lr.SeverityNumber != 9 || lr.EventName != "user.login_failed" ||
						attr(lr.Body.KvlistValue.Values, "action") != "user.login_failed" || attr(rl.Resource.Attributes, "service.name") != "logbook" {
						w.WriteHeader(http.StatusBadRequest)
						return "", nil, false
					}
					out = append(out, receivedEvent{attr(lr.Attributes, "logbook.event.id"), org})
				}
			}
		}
		_, _ = w.Write([]byte(`{}`))
		return "", out, true
	})
}

// Splunk HEC, Datadog and OTLP/HTTP receivers each get every event of the stream's organization
// once, in order, in their own wire format, through a throttling answer (429 with Retry-After) and
// an outage (the receiver killed and restarted).
func TestRequestDestinations(t *testing.T) {
	tests := []struct {
		name string
		rc   func(t *testing.T) *receiver
		dest func(url string) (logstream.Destination, logstream.Secrets)
	}{
		{"splunk", func(t *testing.T) *receiver { return splunkReceiver(t, "hec-token") },
			func(url string) (logstream.Destination, logstream.Secrets) {
				return logstream.Destination{Type: logstream.TypeSplunk, URL: url, Index: "audit"}, logstream.Secrets{Token: "hec-token"}
			}},
		{"datadog", func(t *testing.T) *receiver { return datadogReceiver(t, "dd-key") },
			func(url string) (logstream.Destination, logstream.Secrets) {
				return logstream.Destination{Type: logstream.TypeDatadog, URL: url + "/api/v2/logs", Tags: "env:test"}, logstream.Secrets{APIKey: "dd-key"}
			}},
		{"otlp", otlpReceiver,
			func(url string) (logstream.Destination, logstream.Secrets) {
				return logstream.Destination{Type: logstream.TypeOTLP, URL: url}, logstream.Secrets{Headers: map[string]string{"X-Scope-OrgID": "tenant-1"}}
			}},
	}
	e := newEnv(t)
	e.startManager(t, testConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := tt.rc(t)
			org, other := storetest.NewOrg(t), storetest.NewOrg(t)
			d, sec := tt.dest(rc.url())
			s := e.createStream(t, logstream.Stream{OrganizationID: org, Destination: d, Batch: logstream.Batch{MaxEvents: 30, LingerMS: 20}}, sec)
			first := newRecords(org, 40)
			publishValid(t, e.js, first)
			publishValid(t, e.js, newRecords(other, 10))
			rc.waitDistinct(t, 40)

			rc.answer(http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}})
			second := newRecords(org, 40)
			publishValid(t, e.js, second)
			require.Eventually(t, func() bool { return e.status(t, s.ID).FailedAttempts >= 1 }, waitFor, tick)
			// Retry-After (1 s) wins over the backoff (at most 400 ms here): in 1.5 s at most two
			// more attempts are made, where the backoff alone would make four or more.
			before := e.status(t, s.ID).FailedAttempts
			time.Sleep(1500 * time.Millisecond)
			assert.LessOrEqual(t, e.status(t, s.ID).FailedAttempts-before, uint64(2), "Retry-After honoured")
			rc.answer(0, nil)
			rc.kill()
			third := newRecords(org, 40)
			publishValid(t, e.js, third)
			time.Sleep(200 * time.Millisecond)
			rc.restart()
			want := append(append(ids(first), ids(second)...), ids(third)...)
			rc.waitDistinct(t, len(want))
			checkDelivery(t, rc, want)
			st := e.status(t, s.ID)
			assert.GreaterOrEqual(t, st.FailedAttempts, uint64(2))
			reqs, _ := rc.snapshot()
			for _, r := range reqs {
				for _, ev := range r.Events {
					require.Equal(t, org, ev.Org)
				}
			}
		})
	}
}
