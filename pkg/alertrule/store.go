package alertrule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// ErrNotFound is returned for a rule that does not exist.
var ErrNotFound = errors.New("alert rule not found")

// EnsureBuckets creates the rules, state and firings buckets (file storage, replicas copies).
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, c := range []jetstream.KeyValueConfig{
		{Bucket: BucketRules, Description: "Logbook alert rules"},
		{Bucket: BucketState, Description: "Logbook alert rule windows and cool-downs", TTL: StateTTL},
		{Bucket: BucketFirings, Description: "Logbook alert firings", TTL: FiringTTL},
	} {
		c.Storage, c.Replicas, c.History = jetstream.FileStorage, replicas, 1
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return fmt.Errorf("failed to create bucket %s: %w", c.Bucket, err)
		}
	}
	return nil
}

// Store keeps rules and firings. Safe for concurrent use.
type Store struct {
	Rules, State, FiringsKV jetstream.KeyValue
	sealer                  *logstream.Sealer
}

// Open returns the Store (EnsureBuckets first), sealing webhook secrets with the log streams' key.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	st := &Store{}
	for name, kv := range map[string]*jetstream.KeyValue{BucketRules: &st.Rules, BucketState: &st.State, BucketFirings: &st.FiringsKV} {
		b, err := js.KeyValue(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("failed to open bucket %s: %w", name, err)
		}
		*kv = b
	}
	sealer, err := logstream.LoadSealer(ctx, js)
	if err != nil {
		return nil, err
	}
	st.sealer = sealer
	return st, nil
}

// Put stores r with its secrets: created when rev is 0, else updated at rev (logstream.ErrConflict
// when it changed since).
func (st *Store) Put(ctx context.Context, r *Rule, sec *Secrets, rev uint64) error {
	sealed, err := st.sealer.Seal(r.ID, sec)
	if err != nil {
		return err
	}
	b, err := json.Marshal(Record{Rule: *r, Sealed: sealed})
	if err != nil {
		return fmt.Errorf("failed to encode rule %s: %w", r.ID, err)
	}
	if rev == 0 {
		_, err = st.Rules.Create(ctx, r.ID, b)
	} else {
		_, err = st.Rules.Update(ctx, r.ID, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return logstream.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("failed to store rule %s: %w", r.ID, err)
	}
	return nil
}

// Get returns rule id and its revision.
func (st *Store) Get(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := st.Rules.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read rule %s: %w", id, err)
	}
	r, err := Decode(e.Value())
	return r, e.Revision(), err
}

// Decode decodes a stored rule.
func Decode(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("failed to decode alert rule: %w", err)
	}
	return &r, nil
}

// Secrets opens r's secrets.
func (st *Store) Secrets(r *Record) (*Secrets, error) {
	var s Secrets
	if err := st.sealer.Open(r.ID, r.Sealed, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// List returns every rule, oldest first.
func (st *Store) List(ctx context.Context) ([]*Record, error) {
	keys, err := st.Rules.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list rules: %w", err)
	}
	var out []*Record
	for k := range keys.Keys() {
		r, _, err := st.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Delete removes rule id and its window state (its firings stay until they expire).
func (st *Store) Delete(ctx context.Context, id string) error {
	if err := st.Rules.Purge(ctx, id); err != nil {
		return fmt.Errorf("failed to delete rule %s: %w", id, err)
	}
	keys, err := st.State.ListKeysFiltered(ctx, id+".>")
	if err != nil {
		return nil
	}
	for k := range keys.Keys() {
		_ = st.State.Purge(ctx, k)
	}
	return nil
}

// Firings returns up to limit of rule's firings, newest first.
func (st *Store) Firings(ctx context.Context, rule string, limit int) ([]Firing, error) {
	keys, err := st.FiringsKV.ListKeysFiltered(ctx, rule+".>")
	if err != nil {
		return nil, fmt.Errorf("failed to list firings: %w", err)
	}
	var out []Firing
	for k := range keys.Keys() {
		e, err := st.FiringsKV.Get(ctx, k)
		if err != nil {
			continue
		}
		var f Firing
		if json.Unmarshal(e.Value(), &f) == nil {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b Firing) int { return b.FiredAt.Compare(a.FiredAt) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
