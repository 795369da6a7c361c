// Package outputs wires the output-side workers that run beside the writer on the valid stream:
// log-stream delivery (writer/logstream) and alert evaluation and delivery (writer/alerts). The
// writer service and the single process both start them through Open.
package outputs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/writer/alerts"
	shipping "github.com/logbookhq/logbook/writer/logstream"
)

// Config is the workers' configuration.
type Config struct {
	// Replicas is the buckets' replica count (LOGBOOK_STREAM_REPLICAS).
	Replicas   int
	LogStreams shipping.Config
	Alerts     alerts.Config
}

// Outputs are the prepared workers and the stores the APIs share with them.
type Outputs struct {
	// Streams and Rules are the log streams and alert rules buckets.
	Streams *logstream.Store
	Rules   *alertrule.Store
	// Recorder puts changes and firings on record in org_logbook.
	Recorder logstream.Recorder
	runs     []func(context.Context) error
}

// NewEventID mints the id of an event Logbook records about itself (a ULID, as the gateway's).
func NewEventID(t time.Time) string {
	return ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String()
}

// Open prepares the buckets and the workers; catch-ups read db; metrics go to reg.
func Open(ctx context.Context, js jetstream.JetStream, db *store.Store, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Outputs, error) {
	if err := logstream.EnsureBucket(ctx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	if err := alertrule.EnsureBuckets(ctx, js, cfg.Replicas); err != nil {
		return nil, err
	}
	streams, err := logstream.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	rules, err := alertrule.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	o := &Outputs{Streams: streams, Rules: rules, Recorder: logstream.RawRecorder{Pub: js, NewID: NewEventID}}
	ships, err := shipping.NewManager(js, streams, db, cfg.LogStreams, log.With("service", "logstream"))
	if err != nil {
		return nil, err
	}
	reg.MustRegister(shipping.NewCollector(js, streams, ships))
	eval, err := alerts.NewEvaluator(ctx, js, rules, cfg.Alerts, log.With("service", "alerts"))
	if err != nil {
		return nil, err
	}
	o.runs = []func(context.Context) error{ships.Run, eval.Run,
		alerts.NewDeliverer(rules, streams, o.Recorder, cfg.Alerts, log.With("service", "alerts")).Run}
	return o, nil
}

// Runs are the workers' loops; each returns when ctx ends.
func (o *Outputs) Runs() []func(context.Context) error { return o.runs }

// Run runs every worker until ctx ends.
func (o *Outputs) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, run := range o.runs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	wg.Wait()
	return nil
}
