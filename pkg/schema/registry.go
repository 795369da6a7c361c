package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// ErrUnknownVersion is returned when an event names a schema version its action does not have.
var ErrUnknownVersion = errors.New("unknown schema version")

// Keys: env/<action>/<version> for the environment's schemas, org/<org>/<action>/<version> for an
// organization's own. Action names and organization ids hold only characters that are valid in
// key-value keys (validate.ValidAction, event.ValidOrgID).
const (
	envPrefix = "env/"
	orgPrefix = "org/"
)

// scope names whose schemas a list belongs to: "" for the environment, else an organization id.
func scoped(org, action string) string {
	if org == "" {
		return action
	}
	return org + "/" + action
}

type entry struct {
	schema   Schema
	compiled *Compiled
}

// Registry keeps every schema version in memory, loaded from and kept in step with the schemas
// key-value bucket (a watch), so the gateway and every validator replica see the same versions.
// Safe for concurrent use.
type Registry struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	now    func() time.Time
	mu     sync.RWMutex
	byName map[string][]*entry // scoped(org, action) -> versions, index = version-1 (nil holes until loaded)
	m      *natsx.Mirror
}

// NewRegistry opens the schemas bucket, loads every version and keeps watching for new ones until
// Close. It returns once the initial load is complete.
func NewRegistry(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Registry, error) {
	kv, err := js.KeyValue(ctx, event.BucketSchemas)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketSchemas, err)
	}
	r := &Registry{kv: kv, log: log, now: time.Now, byName: map[string][]*entry{}}
	r.m, err = natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			return
		}
		if err := r.load(e.Value()); err != nil {
			r.log.Error("skipping unreadable schema", "key", e.Key(), "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load schemas: %w", err)
	}
	return r, nil
}

func (r *Registry) load(raw []byte) (err error) {
	var s Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	c, err := Compile(s.Definition)
	if err != nil {
		return err
	}
	r.put(&entry{schema: s, compiled: c})
	return nil
}

func (r *Registry) put(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := scoped(e.schema.OrganizationID, e.schema.Action)
	vs := r.byName[name]
	for len(vs) < e.schema.Version {
		vs = append(vs, nil)
	}
	vs[e.schema.Version-1] = e
	r.byName[name] = vs
}

// Close stops the watch.
func (r *Registry) Close() { r.m.Stop() }

// Lookup returns the compiled environment schema an event of action with the given version must
// satisfy. Version 0 (not sent) means version 1, as with WorkOS. It returns nil, nil when the action
// has no schema (any event is accepted) and ErrUnknownVersion when the action has schemas but not
// that version. A version this replica has not seen yet through its watch is read from the bucket.
func (r *Registry) Lookup(ctx context.Context, action string, version int) (*Compiled, error) {
	return r.lookup(ctx, "", action, version)
}

// LookupOrg is Lookup among org's own schemas for action. found is false when org has none for
// action (the environment's schemas then apply); see Resolve.
func (r *Registry) LookupOrg(ctx context.Context, org, action string, version int) (c *Compiled, found bool, err error) {
	if org == "" || len(r.Versions(org, action)) == 0 {
		return nil, false, nil
	}
	c, err = r.lookup(ctx, org, action, version)
	return c, true, err
}

func (r *Registry) lookup(ctx context.Context, org, action string, version int) (*Compiled, error) {
	if version == 0 {
		version = 1
	}
	r.mu.RLock()
	vs := r.byName[scoped(org, action)]
	var e *entry
	if version <= len(vs) {
		e = vs[version-1]
	}
	r.mu.RUnlock()
	if e != nil {
		return e.compiled, nil
	}
	if len(vs) == 0 {
		return nil, nil
	}
	if err := r.refresh(ctx, org, action, version); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: action %q has no schema version %d", ErrUnknownVersion, action, version)
	} else if err != nil {
		return nil, err
	}
	return r.lookup(ctx, org, action, version)
}

// Create stores d as the next version of the environment's schema for action and returns it.
// Versions are immutable: concurrent creators race on the key and the loser takes the next number.
func (r *Registry) Create(ctx context.Context, action string, d Definition) (*Schema, error) {
	return r.CreateFor(ctx, "", action, d)
}

// CreateFor is Create for org's own schema of action ("" for the environment's). An organization's
// schema for an action takes precedence over the environment's for that organization's events.
func (r *Registry) CreateFor(ctx context.Context, org, action string, d Definition) (*Schema, error) {
	c, err := Compile(d)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 20; attempt++ {
		next := len(r.Versions(org, action)) + 1
		s := Schema{Action: action, OrganizationID: org, Version: next, CreatedAt: r.now().UTC().Truncate(time.Millisecond), Definition: d}
		raw, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("failed to encode schema: %w", err)
		}
		_, err = r.kv.Create(ctx, key(org, action, next), raw)
		if errors.Is(err, jetstream.ErrKeyExists) {
			if err := r.refresh(ctx, org, action, next); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to store schema %s v%d: %w", action, next, err)
		}
		r.put(&entry{schema: s, compiled: c})
		return &s, nil
	}
	return nil, fmt.Errorf("failed to store schema %s: too many concurrent versions", action)
}

func (r *Registry) refresh(ctx context.Context, org, action string, version int) error {
	e, err := r.kv.Get(ctx, key(org, action, version))
	if err != nil {
		return fmt.Errorf("failed to read schema %s v%d: %w", action, version, err)
	}
	return r.load(e.Value())
}

// Versions returns the loaded versions of org's own schema for action ("" for the environment's),
// oldest first.
func (r *Registry) Versions(org, action string) []Schema {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.byName[scoped(org, action)]
	out := make([]Schema, 0, len(vs))
	for _, e := range vs {
		if e != nil {
			out = append(out, e.schema)
		}
	}
	return out
}

// Actions returns the names of all actions with at least one environment schema, sorted.
func (r *Registry) Actions() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for name, vs := range r.byName {
		if len(vs) > 0 && vs[0] != nil && vs[0].schema.OrganizationID == "" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func key(org, action string, version int) string {
	if org != "" {
		return orgPrefix + org + "/" + action + "/" + strconv.Itoa(version)
	}
	return envPrefix + action + "/" + strconv.Itoa(version)
}

// Source finds the environment schema of an action; *Registry is one. A Source that is also an
// OrgSource has organization-specific schemas, which Resolve consults first.
type Source interface {
	Lookup(ctx context.Context, action string, version int) (*Compiled, error)
}

// OrgSource finds an organization's own schema of an action (found false: it has none).
type OrgSource interface {
	LookupOrg(ctx context.Context, org, action string, version int) (c *Compiled, found bool, err error)
}

// Resolve returns the schema an event of org must satisfy: org's own schema for the action when it
// has one (event.version then picks among org's versions), else the environment's. The gateway and
// the validator both resolve through here, so they always agree.
func Resolve(ctx context.Context, s Source, org, action string, version int) (*Compiled, error) {
	if os, ok := s.(OrgSource); ok {
		c, found, err := os.LookupOrg(ctx, org, action, version)
		if found || err != nil {
			return c, err
		}
	}
	return s.Lookup(ctx, action, version)
}
