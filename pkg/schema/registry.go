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

// Limits on a retirement record.
const (
	MaxRetiredByLen     = 200
	MaxRetiredReasonLen = 1000
)

// Change names an administrative change to the registry, as the audit hook is told it.
type Change string

// The changes the registry makes.
const (
	ChangeCreated Change = "schema.created"
	ChangeRetired Change = "schema.retired"
)

// Audit is told of each administrative change once it is stored: the self-audit hook. The
// registry's default does nothing; ctx is the request's (or the command's).
type Audit interface {
	SchemaChanged(ctx context.Context, change Change, s Schema)
}

type noAudit struct{}

func (noAudit) SchemaChanged(context.Context, Change, Schema) {}

// scope names whose schemas a list belongs to: "" for the environment, else an organization id.
func scoped(org, action string) string {
	if org == "" {
		return action
	}
	return org + "/" + action
}

type entry struct {
	schema   Schema
	compiled *Compiled // nil when this release refuses the definition
	refusal  error     // why, then
}

// inForce reports whether the version applies to new events.
func (e *entry) inForce() bool { return e.compiled != nil && e.schema.Retired == nil }

// Registry keeps every schema version in memory, loaded from and kept in step with the schemas
// key-value bucket (a watch), so the gateway and every validator replica see the same versions.
// Safe for concurrent use.
type Registry struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	now    func() time.Time
	mu     sync.RWMutex
	byName map[string][]*entry // scoped(org, action) -> versions, index = version-1 (nil holes until loaded)
	audit  Audit
	m      *natsx.Mirror
}

// NewRegistry opens the schemas bucket, loads every version and keeps watching for new ones until
// Close. It returns once the initial load is complete.
func NewRegistry(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Registry, error) {
	kv, err := js.KeyValue(ctx, event.BucketSchemas)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketSchemas, err)
	}
	r := &Registry{kv: kv, log: log, now: time.Now, byName: map[string][]*entry{}, audit: noAudit{}}
	r.m, err = natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			return
		}
		if _, err := r.load(e.Value()); err != nil {
			r.log.Error("skipping unreadable schema", "key", e.Key(), "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load schemas: %w", err)
	}
	return r, nil
}

// UseAudit makes the registry tell a of every version it creates or retires.
func (r *Registry) UseAudit(a Audit) { r.audit = a }

// load adds or replaces a stored version. A definition this release refuses (stored by an earlier
// one: say, one past today's cost bound) is kept as retired by "logbook": listed, never applied.
func (r *Registry) load(raw []byte) (*entry, error) {
	var s Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	if s.Version < 1 {
		return nil, fmt.Errorf("schema %s has version %d", s.Action, s.Version)
	}
	e := &entry{schema: s}
	if c, err := Compile(s.Definition); err != nil {
		r.log.Error("a stored schema version is refused by this release; it applies to no event until replaced",
			"action", s.Action, "organization_id", s.OrganizationID, "version", s.Version, "err", err)
		e.refusal = err
	} else {
		e.compiled = r.bind(c, s)
	}
	r.put(e)
	return e, nil
}

// bind gives c the identity of s and the registry's logger.
func (r *Registry) bind(c *Compiled, s Schema) *Compiled {
	c.id = Schema{Action: s.Action, OrganizationID: s.OrganizationID, Version: s.Version, CreatedAt: s.CreatedAt}
	c.log = r.log
	return c
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

// Lookup returns the compiled environment schema a new event of action naming version must
// satisfy. Version 0 (not sent) means version 1, as with WorkOS. When that version is retired, the
// newest earlier version in force applies. It returns nil, nil when no version applies (the action
// has no schema, or none in force at or before version: any event is accepted) and
// ErrUnknownVersion when the action has schemas but not that version. A version this replica has
// not seen yet through its watch is read from the bucket.
func (r *Registry) Lookup(ctx context.Context, action string, version int) (*Compiled, error) {
	return r.lookup(ctx, "", action, version, false)
}

// LookupOrg is Lookup among org's own schemas for action. found is false when org has no version
// of its own in force for action (the environment's schemas then apply); see Resolve.
func (r *Registry) LookupOrg(ctx context.Context, org, action string, version int) (c *Compiled, found bool, err error) {
	if org == "" || !r.anyInForce(org, action) {
		return nil, false, nil
	}
	c, err = r.lookup(ctx, org, action, version, false)
	return c, true, err
}

// Exact returns version of org's own schema for action ("" for the environment's) whether or not
// it is retired: for an event that was accepted under that version and must be judged by it. It
// returns ErrUnknownVersion when there is no such version, and an ErrInvalid error when this
// release refuses the version's definition.
func (r *Registry) Exact(ctx context.Context, org, action string, version int) (*Compiled, error) {
	return r.lookup(ctx, org, action, version, true)
}

func (r *Registry) anyInForce(org, action string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.byName[scoped(org, action)] {
		if e != nil && e.inForce() {
			return true
		}
	}
	return false
}

func (r *Registry) lookup(ctx context.Context, org, action string, version int, exact bool) (*Compiled, error) {
	if version == 0 {
		version = 1
	}
	if version < 0 {
		return nil, fmt.Errorf("%w: action %q has no schema version %d", ErrUnknownVersion, action, version)
	}
	r.mu.RLock()
	known := len(r.byName[scoped(org, action)])
	r.mu.RUnlock()
	if known == 0 && !exact {
		return nil, nil
	}
	for v := version; v >= 1; v-- {
		e, err := r.entry(ctx, org, action, v)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: action %q has no schema version %d", ErrUnknownVersion, action, v)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case exact && e.compiled == nil:
			return nil, fmt.Errorf("schema %s v%d: %w", action, v, e.refusal)
		case exact || e.inForce():
			return e.compiled, nil
		}
	}
	return nil, nil
}

// entry returns version v of org's action, reading it from the bucket when this replica has not
// seen it yet.
func (r *Registry) entry(ctx context.Context, org, action string, v int) (*entry, error) {
	if e := r.held(org, action, v); e != nil {
		return e, nil
	}
	if err := r.refresh(ctx, org, action, v); err != nil {
		return nil, err
	}
	if e := r.held(org, action, v); e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("schema %s v%d was read but is not the version its key names", action, v)
}

// held returns version v of org's action if this replica holds it.
func (r *Registry) held(org, action string, v int) *entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.byName[scoped(org, action)]
	if v < 1 || v > len(vs) {
		return nil
	}
	return vs[v-1]
}

// refresh reads version v of org's action from the bucket into the registry; the error wraps
// jetstream.ErrKeyNotFound when there is no such version.
func (r *Registry) refresh(ctx context.Context, org, action string, v int) error {
	got, err := r.kv.Get(ctx, key(org, action, v))
	if err != nil {
		return fmt.Errorf("failed to read schema %s v%d: %w", action, v, err)
	}
	_, err = r.load(got.Value())
	return err
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
		next := r.count(org, action) + 1
		s := Schema{Action: action, OrganizationID: org, Version: next, CreatedAt: r.now().UTC().Truncate(time.Millisecond), Definition: d}
		raw, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("failed to encode schema: %w", err)
		}
		_, err = r.kv.Create(ctx, key(org, action, next), raw)
		if errors.Is(err, jetstream.ErrKeyExists) {
			if _, err := r.entry(ctx, org, action, next); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to store schema %s v%d: %w", action, next, err)
		}
		r.put(&entry{schema: s, compiled: r.bind(c, s)})
		r.audit.SchemaChanged(ctx, ChangeCreated, s)
		return &s, nil
	}
	return nil, fmt.Errorf("failed to store schema %s: too many concurrent versions", action)
}

// count is the number of versions of org's action this replica knows, retired ones included.
func (r *Registry) count(org, action string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byName[scoped(org, action)])
}

// Retire withdraws version of org's own schema for action ("" for the environment's) from new
// events, recording by (who) and reason (why) with the time in the stored version, which stays
// listed and readable through Exact. Events naming it are then validated against the newest
// earlier version in force, or none (see Lookup). Retiring a retired version changes nothing:
// changed is false and the first retirement is returned. Every replica sees the change through
// its watch; the audit hook is told once.
func (r *Registry) Retire(ctx context.Context, org, action string, version int, by, reason string) (s *Schema, changed bool, err error) {
	if by == "" || len(by) > MaxRetiredByLen {
		return nil, false, fmt.Errorf("who retires the version is required (at most %d characters)", MaxRetiredByLen)
	}
	if reason == "" || len(reason) > MaxRetiredReasonLen {
		return nil, false, fmt.Errorf("a reason is required (at most %d characters)", MaxRetiredReasonLen)
	}
	if version < 1 {
		return nil, false, fmt.Errorf("%w: action %q has no schema version %d", ErrUnknownVersion, action, version)
	}
	k := key(org, action, version)
	for attempt := 0; attempt < 20; attempt++ {
		got, err := r.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, false, fmt.Errorf("%w: action %q has no schema version %d", ErrUnknownVersion, action, version)
		}
		if err != nil {
			return nil, false, fmt.Errorf("failed to read schema %s v%d: %w", action, version, err)
		}
		var cur Schema
		if err := json.Unmarshal(got.Value(), &cur); err != nil {
			return nil, false, fmt.Errorf("failed to decode schema %s v%d: %w", action, version, err)
		}
		if cur.Retired != nil {
			return &cur, false, nil
		}
		cur.Retired = &Retirement{At: r.now().UTC().Truncate(time.Millisecond), By: by, Reason: reason}
		raw, err := json.Marshal(cur)
		if err != nil {
			return nil, false, fmt.Errorf("failed to encode schema: %w", err)
		}
		if _, err := r.kv.Update(ctx, k, raw, got.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // changed meanwhile (another retirement): read it again
			}
			return nil, false, fmt.Errorf("failed to store the retirement of schema %s v%d: %w", action, version, err)
		}
		if _, err := r.load(raw); err != nil {
			return nil, false, err
		}
		r.log.Info("schema version retired", "action", action, "organization_id", org, "version", version, "by", by, "reason", reason)
		r.audit.SchemaChanged(ctx, ChangeRetired, cur)
		return &cur, true, nil
	}
	return nil, false, fmt.Errorf("failed to retire schema %s v%d: too many concurrent changes", action, version)
}

// Versions returns the loaded versions of org's own schema for action ("" for the environment's),
// oldest first, retired ones included (Retired set).
func (r *Registry) Versions(org, action string) []Schema {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.byName[scoped(org, action)]
	out := make([]Schema, 0, len(vs))
	for _, e := range vs {
		if e == nil {
			continue
		}
		s := e.schema
		if e.refusal != nil && s.Retired == nil {
			s.Retired = &Retirement{At: s.CreatedAt, By: "logbook", Reason: "this release refuses this schema: " + e.refusal.Error()}
		}
		out = append(out, s)
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

// OrgSource finds an organization's own schema of an action (found false: it has none in force).
type OrgSource interface {
	LookupOrg(ctx context.Context, org, action string, version int) (c *Compiled, found bool, err error)
}

// Resolve returns the schema a new event of org must satisfy: org's own schema for the action when
// it has a version in force (event.version then picks among org's versions), else the
// environment's; a retired version gives way to the newest earlier one in force, or to none. The
// gateway and the validator both resolve through here, so they always agree; the *Compiled says
// which version it is (OrganizationID, Version), and Registry.Exact finds that version again.
func Resolve(ctx context.Context, s Source, org, action string, version int) (*Compiled, error) {
	if os, ok := s.(OrgSource); ok {
		c, found, err := os.LookupOrg(ctx, org, action, version)
		if found || err != nil {
			return c, err
		}
	}
	return s.Lookup(ctx, action, version)
}
