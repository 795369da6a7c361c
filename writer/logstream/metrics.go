package logstream

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// Collector exposes every log stream's health on /metrics, read at each scrape from the streams
// bucket (the status its shipper stores) and from JetStream (the consumer's backlog), so every
// replica reports the same values, right even while no replica delivers the stream. The label is
// the stream id (streams are few, made by operators); aggregate replicas with max.
type Collector struct {
	js      jetstream.JetStream
	st      *logstream.Store
	streams func() []*logstream.Record
	now     func() time.Time

	lagEvents, lagSeconds, delivered, failed, failing, released, lastError, lastDelivery *prometheus.Desc
}

// NewCollector returns a Collector of the streams m knows.
func NewCollector(js jetstream.JetStream, st *logstream.Store, m *Manager) *Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("logstream_"+name, help, []string{"log_stream"}, nil)
	}
	return &Collector{
		js: js, st: st, streams: m.Streams, now: time.Now,
		lagEvents:    d("lag_events", "Events the log stream has not delivered yet (while it reads the valid stream)."),
		lagSeconds:   d("lag_seconds", "Age of the oldest event the log stream has not delivered (0 when none)."),
		delivered:    d("delivered_events_total", "Events delivered (a batch delivered again counts again)."),
		failed:       d("failed_attempts_total", "Delivery attempts that failed."),
		failing:      d("failing", "1 while the log stream is failing (failures for longer than LOGBOOK_LOG_STREAM_FAILING_AFTER)."),
		released:     d("released", "1 while the log stream no longer holds its backlog in the valid stream and catches up from ClickHouse."),
		lastError:    d("last_error_timestamp_seconds", "When the last delivery attempt failed (unix seconds; 0 never)."),
		lastDelivery: d("last_delivery_timestamp_seconds", "When a batch was last delivered (unix seconds; 0 never)."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lagEvents, c.lagSeconds, c.delivered, c.failed, c.failing, c.released, c.lastError, c.lastDelivery} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := c.now()
	for _, rec := range c.streams() {
		st, _, err := c.st.Status(ctx, rec.ID)
		if err != nil {
			continue
		}
		id := rec.ID
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, id)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), id)
		}
		if lag, err := logstream.ReadLag(ctx, c.js, &rec.Stream, st); err == nil {
			if lag.EventsKnown {
				gauge(c.lagEvents, float64(lag.Events))
			}
			gauge(c.lagSeconds, lag.Seconds(now))
		}
		counter(c.delivered, st.Delivered)
		counter(c.failed, st.FailedAttempts)
		gauge(c.failing, boolValue(st.Health == logstream.HealthFailing))
		gauge(c.released, boolValue(st.Released))
		gauge(c.lastError, unix(st.LastErrorAt))
		gauge(c.lastDelivery, unix(st.LastDeliveredAt))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t *time.Time) float64 {
	if t == nil {
		return 0
	}
	return float64(t.UnixMilli()) / 1000
}
