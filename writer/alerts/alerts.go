// Package alerts evaluates alert rules in real time on the valid stream and delivers their
// firings. The Evaluator reads LOGBOOK_VALID through the durable consumer "alerts" (shared by the
// writer replicas), matches each event against its organization's rules, keeps each rule's window
// per group in the bucket logbook_alert_state (revision-checked updates, so the state survives
// restarts and several replicas agree), and records each firing in logbook_alert_firings before it
// acknowledges the events. The Deliverer sends every firing not yet delivered — to a webhook signed
// as Standard Webhooks, or through a log stream's destination — with backoff, and records it as an
// event of Logbook's own organization (logbook.alert.fired).
package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// Consumer is the durable consumer of the valid stream the evaluators share.
const Consumer = "alerts"

// Config tunes evaluation and delivery.
type Config struct {
	// MaxBatch is the most events evaluated together; MaxWait how long a fetch waits for them.
	// Defaults 500 and 50 ms (a firing waits at most that long for its batch).
	MaxBatch int
	MaxWait  time.Duration
	// RetryInitial and RetryMax bound the backoff of firing deliveries. Defaults 1 s and 5 min.
	RetryInitial, RetryMax time.Duration
	// RequestTimeout bounds one delivery attempt. Default 15 s.
	RequestTimeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxBatch: 500, MaxWait: 50 * time.Millisecond, RetryInitial: time.Second, RetryMax: 5 * time.Minute, RequestTimeout: 15 * time.Second}
}

// Evaluator matches events against rules. Run one per writer replica.
type Evaluator struct {
	js   jetstream.JetStream
	st   *alertrule.Store
	cons jetstream.Consumer
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	mu    sync.RWMutex
	rules map[string]*alertrule.Rule // by id
	byOrg map[string][]*alertrule.Rule
}

// NewEvaluator creates (or joins) the alerts consumer. A new consumer starts with the events that
// arrive from now on: rules look forward.
func NewEvaluator(ctx context.Context, js jetstream.JetStream, st *alertrule.Store, cfg Config, log *slog.Logger) (*Evaluator, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, event.StreamValid, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   "Logbook alert rule evaluators",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4 * cfg.MaxBatch,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		FilterSubject: event.ValidSubjects,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create consumer %s: %w", Consumer, err)
	}
	return &Evaluator{js: js, st: st, cons: cons, cfg: cfg, log: log, now: time.Now,
		rules: map[string]*alertrule.Rule{}, byOrg: map[string][]*alertrule.Rule{}}, nil
}

// apply keeps the rules in step with the bucket.
func (e *Evaluator) apply(en jetstream.KeyValueEntry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en.Operation() == jetstream.KeyValuePut {
		if r, err := alertrule.Decode(en.Value()); err == nil {
			rule := r.Rule
			e.rules[rule.ID] = &rule
		} else {
			e.log.Error("unreadable alert rule", "key", en.Key(), "err", err)
		}
	} else {
		delete(e.rules, en.Key())
	}
	e.byOrg = map[string][]*alertrule.Rule{}
	for _, r := range e.rules {
		if r.State == logstream.StateActive {
			e.byOrg[r.OrganizationID] = append(e.byOrg[r.OrganizationID], r)
		}
	}
}

// Run evaluates until ctx ends.
func (e *Evaluator) Run(ctx context.Context) error {
	m, err := natsx.WatchBucket(ctx, e.st.Rules, e.apply)
	if err != nil {
		return err
	}
	defer m.Stop()
	for ctx.Err() == nil {
		batch, err := e.cons.Fetch(e.cfg.MaxBatch, jetstream.FetchMaxWait(e.cfg.MaxWait))
		if err != nil {
			e.log.Warn("fetch failed", "consumer", Consumer, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		var msgs []jetstream.Msg
		for msg := range batch.Messages() {
			msgs = append(msgs, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
			e.log.Warn("fetch ended with error", "consumer", Consumer, "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		if err := e.evaluate(context.WithoutCancel(ctx), msgs); err != nil {
			e.log.Warn("alert evaluation failed; the batch comes again", "err", err, "batch_size", len(msgs))
			for _, msg := range msgs {
				_ = msg.NakWithDelay(time.Second)
			}
			continue
		}
		for _, msg := range msgs[:len(msgs)-1] {
			_ = msg.Ack()
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
			e.log.Warn("failed to acknowledge evaluated events", "err", err)
		}
		cancel()
	}
	return nil
}

// hit is one matching event in a rule's window.
type hit struct {
	T  int64  `json:"t"` // received time, unix ms
	ID string `json:"id"`
}

// state is a rule's window for one group.
type state struct {
	Hits      []hit `json:"hits,omitempty"`
	LastFired int64 `json:"last_fired,omitempty"`
	// Seen holds the ids of the latest events applied (at most seenMax), so a batch that comes
	// again (a crash between storing the state and acknowledging) is not counted twice.
	Seen []string `json:"seen,omitempty"`
}

const seenMax = 256

type groupKey struct{ rule, group string }

// evaluate matches msgs and updates every touched window, recording firings.
func (e *Evaluator) evaluate(ctx context.Context, msgs []jetstream.Msg) error {
	hits := map[groupKey][]hit{}
	var order []groupKey
	e.mu.RLock()
	for _, msg := range msgs {
		org := event.OrgFromSubject(msg.Subject())
		rules := e.byOrg[org]
		if len(rules) == 0 || org == logstream.AuditOrg {
			continue
		}
		rec, err := event.Unmarshal(msg.Data())
		if err != nil {
			continue // the validator never passes such a record on
		}
		for _, r := range rules {
			if !r.Match.Matches(rec) {
				continue
			}
			k := groupKey{r.ID, r.Threshold.Group(rec)}
			if _, ok := hits[k]; !ok {
				order = append(order, k)
			}
			hits[k] = append(hits[k], hit{T: rec.ReceivedAt.UnixMilli(), ID: rec.ID})
		}
	}
	rules := make(map[string]alertrule.Rule, len(order))
	for _, k := range order {
		if r := e.rules[k.rule]; r != nil {
			rules[k.rule] = *r
		}
	}
	e.mu.RUnlock()
	for _, k := range order {
		r, ok := rules[k.rule]
		if !ok {
			continue
		}
		if err := e.update(ctx, &r, k.group, hits[k]); err != nil {
			return err
		}
	}
	return nil
}

// update applies new hits to the window of rule r and group, firing as often as the hits call
// for: with a threshold when Count hits fall within the window, else on every hit; never within
// the cool-down after a firing. Firings are recorded first (their ids derive from the triggering
// event, so a batch evaluated again records nothing twice), then the window is stored with a
// revision check, retried on a concurrent change.
func (e *Evaluator) update(ctx context.Context, r *alertrule.Rule, group string, news []hit) error {
	key := stateKey(r.ID, group)
	stateful := r.Threshold != nil || r.CooldownSeconds > 0
	for attempt := 0; ; attempt++ {
		var st state
		var rev uint64
		if stateful {
			en, err := e.st.State.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return fmt.Errorf("failed to read alert state %s: %w", key, err)
			default:
				rev = en.Revision()
				if err := json.Unmarshal(en.Value(), &st); err != nil {
					st = state{}
				}
			}
		}
		firings := e.decide(r, group, &st, news)
		for _, f := range firings {
			if err := e.record(ctx, f); err != nil {
				return err
			}
		}
		if !stateful {
			return nil
		}
		b, _ := json.Marshal(st)
		var err error
		if rev == 0 {
			_, err = e.st.State.Create(ctx, key, b)
		} else {
			_, err = e.st.State.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 8 {
			return fmt.Errorf("failed to store alert state %s: %w", key, err)
		}
	}
}

func stateKey(rule, group string) string {
	sum := sha256.Sum256([]byte(group))
	return rule + "." + hex.EncodeToString(sum[:12])
}

// decide runs news through st in received order and returns the firings they cause.
func (e *Evaluator) decide(r *alertrule.Rule, group string, st *state, news []hit) []alertrule.Firing {
	slices.SortStableFunc(news, func(a, b hit) int { return int(a.T - b.T) })
	cool := int64(r.CooldownSeconds) * 1000
	var out []alertrule.Firing
	for _, h := range news {
		if slices.Contains(st.Seen, h.ID) {
			continue // evaluated before (a batch that came again)
		}
		st.Seen = append(st.Seen[max(0, len(st.Seen)-seenMax+1):], h.ID)
		if r.Threshold == nil {
			if st.LastFired != 0 && h.T-st.LastFired < cool {
				continue
			}
			out = append(out, e.firing(r, group, []hit{h}))
			st.LastFired = h.T
			continue
		}
		window := int64(r.Threshold.WindowSeconds) * 1000
		st.Hits = append(st.Hits, h)
		st.Hits = slices.DeleteFunc(st.Hits, func(x hit) bool { return x.T <= h.T-window })
		if len(st.Hits) > r.Threshold.Count {
			st.Hits = st.Hits[len(st.Hits)-r.Threshold.Count:]
		}
		if len(st.Hits) >= r.Threshold.Count && (st.LastFired == 0 || h.T-st.LastFired >= cool) {
			out = append(out, e.firing(r, group, st.Hits))
			st.LastFired = h.T
			st.Hits = nil
		}
	}
	return out
}

// firing describes a firing of r for group, triggered by the last of hits.
func (e *Evaluator) firing(r *alertrule.Rule, group string, hits []hit) alertrule.Firing {
	last := hits[len(hits)-1]
	f := alertrule.Firing{
		Object: "alert_firing", ID: "alert_firing_" + last.ID + "_" + r.ID[len(alertrule.IDPrefix):],
		RuleID: r.ID, RuleName: r.Name, OrganizationID: r.OrganizationID, Group: group, Count: len(hits),
		FirstAt: time.UnixMilli(hits[0].T).UTC(), LastAt: time.UnixMilli(last.T).UTC(), FiredAt: e.now().UTC(),
	}
	if r.Threshold != nil {
		f.GroupBy, f.WindowSeconds = r.Threshold.GroupBy, r.Threshold.WindowSeconds
	}
	for _, h := range hits {
		f.EventIDs = append(f.EventIDs, h.ID)
	}
	return f
}

// record stores a firing unless it exists (a batch evaluated again).
func (e *Evaluator) record(ctx context.Context, f alertrule.Firing) error {
	b, _ := json.Marshal(f)
	_, err := e.st.FiringsKV.Create(ctx, alertrule.FiringKey(f.RuleID, f.ID), b)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("failed to record firing %s: %w", f.ID, err)
	}
	if err == nil {
		e.log.Info("alert fired", "rule", f.RuleID, "firing", f.ID, "org_id", f.OrganizationID, "count", f.Count)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
