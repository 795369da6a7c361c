package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/writer/logstream/destination"
)

// ActionFired is the action of the event recording a firing in Logbook's own organization.
const ActionFired = "logbook.alert.fired"

// Deliverer sends firings to their rule's destination and records them. Every replica runs one;
// a firing two replicas both send arrives twice with the same webhook-id (the firing id). Each rule
// has one queue, worked by one goroutine while it holds firings, oldest first: a rule whose
// destination is down waits with its backlog and never delays another rule's firings.
type Deliverer struct {
	st      *alertrule.Store
	streams *logstream.Store
	rec     logstream.Recorder
	cfg     Config
	log     *slog.Logger
	client  *http.Client

	mu     sync.Mutex
	queued map[string]bool      // firing keys waiting or being delivered
	queues map[string]*[]string // rule id → its waiting firing keys, oldest first
	wg     sync.WaitGroup
}

// NewDeliverer returns a Deliverer of st's firings; log streams named by rules come from streams,
// records go through rec.
func NewDeliverer(st *alertrule.Store, streams *logstream.Store, rec logstream.Recorder, cfg Config, log *slog.Logger) *Deliverer {
	return &Deliverer{st: st, streams: streams, rec: rec, cfg: cfg, log: log, queued: map[string]bool{}, queues: map[string]*[]string{},
		client: &http.Client{Timeout: cfg.RequestTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// Run delivers until ctx ends: every firing not yet delivered, as it is recorded.
func (d *Deliverer) Run(ctx context.Context) error {
	m, err := natsx.WatchBucket(ctx, d.st.FiringsKV, func(en jetstream.KeyValueEntry) {
		if en.Operation() != jetstream.KeyValuePut {
			return
		}
		var f alertrule.Firing
		if json.Unmarshal(en.Value(), &f) != nil || f.Delivered != nil {
			return
		}
		d.enqueue(ctx, f.RuleID, en.Key())
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	m.Stop()
	d.wg.Wait()
	return nil
}

// enqueue adds a firing to its rule's queue, starting the rule's worker if it is idle.
func (d *Deliverer) enqueue(ctx context.Context, rule, key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.queued[key] {
		return
	}
	d.queued[key] = true
	q, running := d.queues[rule]
	if !running {
		q = &[]string{}
		d.queues[rule] = q
	}
	*q = append(*q, key)
	if running {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			d.mu.Lock()
			if len(*q) == 0 || ctx.Err() != nil {
				delete(d.queues, rule)
				for _, k := range *q {
					delete(d.queued, k)
				}
				d.mu.Unlock()
				return
			}
			next := (*q)[0]
			*q = (*q)[1:]
			d.mu.Unlock()
			d.deliver(ctx, next)
			d.mu.Lock()
			delete(d.queued, next)
			d.mu.Unlock()
		}
	}()
}

// deliver records and sends one firing, retrying until it is accepted or ctx ends.
func (d *Deliverer) deliver(ctx context.Context, key string) {
	wait := d.cfg.RetryInitial
	for ctx.Err() == nil {
		done, err := d.attempt(ctx, key)
		if done {
			return
		}
		d.log.Warn("alert delivery failed; retrying", "firing", key, "err", err, "wait", wait)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, d.cfg.RetryMax)
	}
}

// attempt makes one try; done means nothing is left to do (delivered, or the firing is gone).
func (d *Deliverer) attempt(ctx context.Context, key string) (bool, error) {
	en, err := d.st.FiringsKV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var f alertrule.Firing
	if err := json.Unmarshal(en.Value(), &f); err != nil || f.Delivered != nil {
		return true, nil
	}
	rule, _, err := d.st.Get(ctx, f.RuleID)
	if errors.Is(err, alertrule.ErrNotFound) {
		return true, nil // the rule was deleted: its firings stay on record, undelivered
	}
	if err != nil {
		return false, err
	}
	rec := firingRecord(&f)
	if err := d.rec.Record(ctx, logstream.Change{ID: rec.ID, At: rec.ReceivedAt, Action: ActionFired,
		Targets: rec.Event.Targets, Metadata: rec.Event.Metadata}); err != nil {
		return false, err
	}
	sendErr := d.send(ctx, rule, &f, rec)
	f.Attempts++
	if sendErr == nil {
		now := time.Now().UTC()
		f.Delivered, f.LastError = &now, ""
	} else {
		f.LastError = sendErr.Error()
	}
	b, _ := json.Marshal(f)
	if _, err := d.st.FiringsKV.Update(ctx, key, b, en.Revision()); err != nil && sendErr == nil {
		return false, fmt.Errorf("delivered, but failed to mark firing %s delivered: %w", f.ID, err)
	}
	return sendErr == nil, sendErr
}

// send delivers f to rule's destination once.
func (d *Deliverer) send(ctx context.Context, rule *alertrule.Record, f *alertrule.Firing, rec *event.Record) error {
	actx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	switch rule.Destination.Type {
	case alertrule.DestWebhook:
		sec, err := d.st.Secrets(rule)
		if err != nil {
			return err
		}
		signer, err := destination.NewSigner(sec.SigningSecret)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(f)
		return destination.PostSigned(actx, d.client, rule.Destination.URL, signer, f.ID, body, nil, rule.ID)
	case alertrule.DestLogStream:
		ls, _, err := d.streams.Get(actx, rule.Destination.LogStreamID)
		if err != nil {
			return fmt.Errorf("log stream %s: %w", rule.Destination.LogStreamID, err)
		}
		sec, err := d.streams.Open(ls)
		if err != nil {
			return err
		}
		sender, err := destination.New(ls.Destination, *sec, d.client)
		if err != nil {
			return err
		}
		ev, err := store.EventOf(rec)
		if err != nil {
			return err
		}
		return sender.Send(actx, &destination.Batch{StreamID: ls.ID, Events: []store.Event{ev}})
	}
	return fmt.Errorf("unknown destination %q", rule.Destination.Type)
}

// firingRecord is the event recording f in Logbook's own organization; its id derives from the
// firing, so recording it again is deduplicated.
func firingRecord(f *alertrule.Firing) *event.Record {
	sum := sha256.Sum256([]byte(f.ID))
	var entropy [10]byte
	copy(entropy[:], sum[:])
	id := ulid.ULID{}
	_ = id.SetTime(ulid.Timestamp(f.FiredAt))
	_ = id.SetEntropy(entropy[:])
	at := f.FiredAt.UTC().Truncate(time.Millisecond)
	meta := map[string]any{"firing_id": f.ID, "rule_name": truncate(f.RuleName, 500), "count": f.Count,
		"first_event_id": f.EventIDs[0], "last_event_id": f.EventIDs[len(f.EventIDs)-1],
		"first_event_at": event.FormatTime(f.FirstAt), "last_event_at": event.FormatTime(f.LastAt)}
	if f.Group != "" {
		meta["group_by"], meta["group"] = f.GroupBy, truncate(f.Group, 500)
	}
	if f.WindowSeconds > 0 {
		meta["window_seconds"] = f.WindowSeconds
	}
	return &event.Record{
		ID: id.String(), OrganizationID: logstream.AuditOrg, ReceivedAt: at,
		Event: event.Event{Action: ActionFired, OccurredAt: at,
			Actor:   event.Entity{ID: "logbook", Type: "system", Name: "Logbook"},
			Targets: []event.Entity{{ID: f.RuleID, Type: "alert_rule"}, {ID: f.OrganizationID, Type: "organization"}},
			Context: event.Context{Location: "unknown"}, Metadata: meta},
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
