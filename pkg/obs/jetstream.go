package obs

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// Consumer names a durable consumer on a stream.
type Consumer struct {
	Stream, Name string
}

// JetStream is a collector that reads stream and consumer state from JetStream at every scrape:
// how full each stream is against its byte cap, and each consumer's backlog. A consumer's pending
// count is the backlog operators watch: it grows while the stage behind it is down (the writer's,
// while ClickHouse is unreachable); the age of the oldest unsettled event says how long it has
// been waiting (nothing expires while it waits: see natsx.Trimmer). Every replica of a service
// reports the same cluster-wide values; aggregate with max, not sum.
type JetStream struct {
	js        jetstream.JetStream
	streams   []string
	consumers []Consumer

	streamBytes, streamMaxBytes, streamMessages, streamOldest *prometheus.Desc
	pending, ackPending, redelivered, consumerOldest          *prometheus.Desc
	errors                                                    prometheus.Counter
}

// ScrapeTimeout bounds the JetStream requests of one scrape.
const ScrapeTimeout = 3 * time.Second

// NewJetStream returns a collector of svc's view of streams and consumers:
// <svc>_stream_bytes, <svc>_stream_max_bytes, <svc>_stream_messages,
// <svc>_stream_oldest_unsettled_seconds (label stream), <svc>_consumer_pending_messages,
// <svc>_consumer_ack_pending_messages, <svc>_consumer_redelivered_messages,
// <svc>_consumer_oldest_unsettled_seconds (label consumer), and <svc>_jetstream_scrape_errors_total.
func NewJetStream(svc string, js jetstream.JetStream, streams []string, consumers ...Consumer) *JetStream {
	d := func(name, help, label string) *prometheus.Desc {
		return prometheus.NewDesc(svc+"_"+name, help, []string{label}, nil)
	}
	return &JetStream{
		js: js, streams: streams, consumers: consumers,
		streamBytes:    d("stream_bytes", "Bytes the stream holds.", "stream"),
		streamMaxBytes: d("stream_max_bytes", "The stream's byte cap (LOGBOOK_STREAM_MAX_BYTES); a full raw stream answers producers 503.", "stream"),
		streamMessages: d("stream_messages", "Messages the stream holds.", "stream"),
		streamOldest: d("stream_oldest_unsettled_seconds",
			"Age of the oldest event some durable consumer of the stream has not settled; 0 when all are settled.", "stream"),
		pending:     d("consumer_pending_messages", "Messages in the stream not yet delivered to the consumer (the backlog).", "consumer"),
		ackPending:  d("consumer_ack_pending_messages", "Messages delivered to the consumer and not yet acknowledged.", "consumer"),
		redelivered: d("consumer_redelivered_messages", "Messages delivered more than once and not yet acknowledged.", "consumer"),
		consumerOldest: d("consumer_oldest_unsettled_seconds",
			"Age of the oldest event the consumer has not settled (delivered and unacknowledged, or not yet delivered); 0 when none.", "consumer"),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: svc + "_jetstream_scrape_errors_total",
			Help: "Scrapes that could not read a stream's or consumer's state from JetStream.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (j *JetStream) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{j.streamBytes, j.streamMaxBytes, j.streamMessages, j.streamOldest,
		j.pending, j.ackPending, j.redelivered, j.consumerOldest} {
		ch <- d
	}
	j.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (j *JetStream) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
	}
	progress := map[string]*natsx.Progress{}
	read := func(stream string) *natsx.Progress {
		if p, ok := progress[stream]; ok {
			return p
		}
		p, err := natsx.ReadProgress(ctx, j.js, stream)
		if err != nil {
			j.errors.Inc()
			progress[stream] = nil
			return nil
		}
		progress[stream] = &p
		return &p
	}
	for _, name := range j.streams {
		s, err := j.js.Stream(ctx, name)
		if err != nil {
			j.errors.Inc()
			continue
		}
		info := s.CachedInfo()
		gauge(j.streamBytes, float64(info.State.Bytes), name)
		gauge(j.streamMaxBytes, float64(info.Config.MaxBytes), name)
		gauge(j.streamMessages, float64(info.State.Msgs), name)
		if p := read(name); p != nil {
			gauge(j.streamOldest, age(p.Now, p.Oldest()), name)
		}
	}
	for _, c := range j.consumers {
		if p := read(c.Stream); p != nil {
			for _, cp := range p.Consumers {
				if cp.Name == c.Name {
					gauge(j.consumerOldest, age(p.Now, cp.Oldest), c.Name)
				}
			}
		}
		cons, err := j.js.Consumer(ctx, c.Stream, c.Name)
		if err != nil {
			j.errors.Inc()
			continue
		}
		info := cons.CachedInfo()
		gauge(j.pending, float64(info.NumPending), c.Name)
		gauge(j.ackPending, float64(info.NumAckPending), c.Name)
		gauge(j.redelivered, float64(info.NumRedelivered), c.Name)
	}
	j.errors.Collect(ch)
}

// age is how long before now t was, in seconds; 0 for the zero time.
func age(now, t time.Time) float64 {
	if t.IsZero() || t.After(now) {
		return 0
	}
	return now.Sub(t).Seconds()
}
