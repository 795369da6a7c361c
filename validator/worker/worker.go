// Package worker is the validator: it reads the raw stream through a durable consumer that all
// replicas share, applies each event's schema, and republishes the event unchanged to the valid
// stream or, with the reason, to the rejected stream. A raw message is acknowledged only after its
// republish was acknowledged, and republishing uses the event's identity as message id, so a crash
// anywhere in between yields neither a loss nor a duplicate.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/validate"
)

// Config tunes the validator.
type Config struct {
	// BatchSize is how many raw messages one fetch takes. Default 500.
	BatchSize int
	// FetchWait is how long a fetch waits for the first message. Default 1 s.
	FetchWait time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering. Default 30 s.
	AckWait time.Duration
	// MaxDeliveries bounds how often a raw message is delivered without being settled (a schema
	// lookup failing, or a validator crashing on it); past it the message goes to the rejected
	// stream with the reason, so a poison message never blocks the rest. Default 20.
	MaxDeliveries int
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{BatchSize: 500, FetchWait: time.Second, AckWait: 30 * time.Second, MaxDeliveries: 20}
}

// schemas finds an action's schema: a *schema.Registry, whose organization-specific schemas
// schema.Resolve consults first.
type schemas = schema.Source

// Worker validates raw events. Run it in as many replicas as needed.
type Worker struct {
	cons     jetstream.Consumer
	valid    *natsx.GroupCommit
	rejected *natsx.GroupCommit
	schemas  schemas
	cfg      Config
	log      *slog.Logger
	metrics  Metrics
}

// Metrics is told how each batch was settled: stored as valid, stored as rejected, or left for
// redelivery. An *obs.Validator; nil records nothing.
type Metrics interface {
	Settled(valid, rejected, retry int)
}

// UseMetrics makes the worker report to m. Call it before Run.
func (w *Worker) UseMetrics(m Metrics) { w.metrics = m }

// New creates (or joins) the durable validator consumer on the raw stream.
func New(ctx context.Context, js jetstream.JetStream, reg schemas, cfg Config, log *slog.Logger) (*Worker, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamRaw, jetstream.ConsumerConfig{
		Durable:       event.ConsumerValidator,
		Description:   "Logbook validator replicas",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: 20 * cfg.BatchSize,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create consumer %s: %w", event.ConsumerValidator, err)
	}
	return &Worker{
		cons:     cons,
		valid:    natsx.NewGroupCommit(js.Conn(), js, event.StreamValid, natsx.DefaultGroupConfig()),
		rejected: natsx.NewGroupCommit(js.Conn(), js, event.StreamRejected, natsx.DefaultGroupConfig()),
		schemas:  reg, cfg: cfg, log: log,
	}, nil
}

// Check reports a stalled republish (natsx.GroupCommit.Check of the valid and rejected
// committers), for readiness.
func (w *Worker) Check(ctx context.Context) error {
	return errors.Join(w.valid.Check(ctx), w.rejected.Check(ctx))
}

// Run validates until ctx is done. The batch in hand when ctx ends is finished first.
func (w *Worker) Run(ctx context.Context) error {
	defer w.valid.Close()
	defer w.rejected.Close()
	for ctx.Err() == nil {
		msgs, err := w.fetch()
		if err != nil {
			w.log.Warn("fetch failed", "consumer", event.ConsumerValidator, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(msgs) > 0 {
			w.process(context.WithoutCancel(ctx), msgs)
		}
	}
	return nil
}

// fetch waits up to FetchWait for one message, then takes whatever else is already waiting, up to
// BatchSize: low latency when idle, large batches under load.
func (w *Worker) fetch() ([]jetstream.Msg, error) {
	first, err := w.cons.Fetch(1, jetstream.FetchMaxWait(w.cfg.FetchWait))
	if err != nil {
		return nil, err
	}
	msgs, err := drain(first)
	if err != nil || len(msgs) == 0 || w.cfg.BatchSize == 1 {
		return msgs, err
	}
	rest, err := w.cons.FetchNoWait(w.cfg.BatchSize - 1)
	if err != nil {
		return msgs, nil // the first message is processed now; the rest come next round
	}
	more, _ := drain(rest)
	return append(msgs, more...), nil
}

func drain(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
		return nil, err
	}
	return msgs, nil
}

// process republishes a batch through the group committers (one atomic batch per target stream
// where possible), then acks the raw messages whose republish was stored and naks the others for
// redelivery.
func (w *Worker) process(ctx context.Context, msgs []jetstream.Msg) {
	type route struct {
		out  []*nats.Msg
		from []jetstream.Msg
	}
	var valid, rejected route
	for _, m := range msgs {
		out, ok := w.decide(ctx, m)
		switch {
		case out == nil:
			_ = m.NakWithDelay(time.Second)
		case ok:
			valid.out, valid.from = append(valid.out, out), append(valid.from, m)
		default:
			rejected.out, rejected.from = append(rejected.out, out), append(rejected.from, m)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rejErrs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if len(rejected.out) > 0 {
			rejErrs = w.rejected.PublishAll(ctx, rejected.out)
		}
	}()
	var validErrs []error
	if len(valid.out) > 0 {
		validErrs = w.valid.PublishAll(ctx, valid.out)
	}
	<-done
	failpoint.Inject("validator-after-publish") // republished, raw messages not yet acked
	settle := func(r route, errs []error) (stored int) {
		for i, m := range r.from {
			if errs[i] != nil {
				w.log.Warn("republish failed; will retry", "subject", r.out[i].Subject, "err", errs[i])
				_ = m.NakWithDelay(time.Second)
				continue
			}
			stored++
			if err := m.Ack(); err != nil {
				w.log.Warn("ack failed (the message will be redelivered and deduplicated)", "err", err)
			}
		}
		return stored
	}
	nValid, nRejected := settle(valid, validErrs), settle(rejected, rejErrs)
	if w.metrics != nil {
		w.metrics.Settled(nValid, nRejected, len(msgs)-nValid-nRejected)
	}
}

// decide builds the message to publish for m: the same payload to the valid stream (valid true),
// or to the rejected stream with the reason. It returns nil when the decision must wait (schemas
// unavailable).
func (w *Worker) decide(ctx context.Context, m jetstream.Msg) (out *nats.Msg, valid bool) {
	rec, err := validate.ParseRecord(m.Data()) // decoded and structurally checked in one pass
	org, id, known := identity(m, rec)
	if meta, merr := m.Metadata(); merr == nil && w.cfg.MaxDeliveries > 0 && meta.NumDelivered > uint64(w.cfg.MaxDeliveries) {
		return rejected(org, id, m.Data(), fmt.Sprintf("delivered %d times without being settled; giving up", meta.NumDelivered)), false
	}
	if errors.Is(err, validate.ErrMalformed) || (err != nil && !known) {
		return rejected(org, id, m.Data(), "undecodable record: "+err.Error()), false
	}
	if err != nil {
		return rejected(org, id, m.Data(), err.Error()), false
	}
	// The version the gateway accepted the event under, when the record names one (see
	// schema.ResolveRecord): a schema registered since does not turn an answered event away.
	compiled, err := schema.ResolveRecord(ctx, w.schemas, rec)
	switch {
	case errors.Is(err, schema.ErrUnknownVersion):
		return rejected(rec.OrganizationID, rec.MsgID(), m.Data(), err.Error()), false
	case err != nil:
		w.log.Warn("schema lookup failed; will retry", "event_id", rec.ID, "err", err)
		return nil, false
	case compiled != nil:
		if errs := compiled.Validate(&rec.Event); errs != nil {
			reason, _ := json.Marshal(errs)
			return rejected(rec.OrganizationID, rec.MsgID(), m.Data(), "schema violation: "+string(reason)), false
		}
	}
	out = nats.NewMsg(event.ValidSubject(rec.OrganizationID))
	out.Data = m.Data()
	out.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
	out.Header.Set(jetstream.ExpectedStreamHeader, event.StreamValid)
	return out, true
}

// identity names m for the rejected stream's dedup: the record's own identity when it has one
// (known), else the raw stream sequence, so a redelivery is never rejected twice.
func identity(m jetstream.Msg, rec *event.Record) (org, msgID string, known bool) {
	if rec == nil {
		var head struct {
			ID  string `json:"id"`
			Org string `json:"organization_id"`
		}
		if json.Unmarshal(m.Data(), &head) == nil && head.ID != "" && event.ValidOrgID(head.Org) {
			rec = &event.Record{ID: head.ID, OrganizationID: head.Org}
		}
	}
	if rec != nil {
		return rec.OrganizationID, rec.MsgID(), true
	}
	if meta, err := m.Metadata(); err == nil {
		msgID = fmt.Sprintf("raw-seq:%d", meta.Sequence.Stream)
	}
	return event.OrgFromSubject(m.Subject()), msgID, false
}

// MaxReasonLen caps the reject-reason header.
const MaxReasonLen = 2048

func rejected(org, msgID string, data []byte, reason string) *nats.Msg {
	if !event.ValidOrgID(org) {
		org = "_invalid"
	}
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	out := nats.NewMsg(event.RejectedSubject(org))
	out.Data = data
	out.Header.Set(event.HeaderRejectReason, strings.ReplaceAll(reason, "\n", " "))
	out.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRejected)
	if msgID != "" {
		out.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
