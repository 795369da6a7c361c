package schema_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
)

// recordedAudit is the self-audit hook, recording what it is told.
type recordedAudit struct {
	mu      sync.Mutex
	changes []string
}

func (a *recordedAudit) SchemaChanged(_ context.Context, change schema.Change, s schema.Schema) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.changes = append(a.changes, fmt.Sprintf("%s %s/%s/%d", change, s.OrganizationID, s.Action, s.Version))
}

func (a *recordedAudit) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.changes...)
}

func definition(t *testing.T, metaType string) schema.Definition {
	t.Helper()
	d, err := schema.ParseDefinition([]byte(`{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"attempts":{"type":"` + metaType + `"}}}}`))
	require.NoError(t, err)
	return d
}

// resolved says which version Resolve applies to a new event of org naming version v: 0 for none.
func resolved(t *testing.T, r *schema.Registry, org string, v int) int {
	t.Helper()
	c, err := schema.Resolve(context.Background(), r, org, "doc.updated", v)
	require.NoError(t, err)
	if c == nil {
		return 0
	}
	return c.Version()
}

// A retired version no longer applies to new events: an event naming it is validated against the
// newest earlier version still in force, or against nothing when there is none. The version stays
// listed, readable for exact lookups (the version an accepted event was pinned to), with who
// retired it, when and why; every replica sees it; numbers are never reused.
func TestRetiredVersionNoLongerAppliesToNewEvents(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.DiscardHandler)
	a, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	defer a.Close()
	audit := &recordedAudit{}
	a.UseAudit(audit)
	b, err := schema.NewRegistry(ctx, js, log) // another replica
	require.NoError(t, err)
	defer b.Close()

	for _, typ := range []string{"number", "string", "number"} {
		_, err := a.Create(ctx, "doc.updated", definition(t, typ))
		require.NoError(t, err)
	}
	assert.Equal(t, 2, resolved(t, a, "", 2))

	s, changed, err := a.Retire(ctx, "", "doc.updated", 2, "ops@example.com", "requires attempts as a string by mistake")
	require.NoError(t, err)
	assert.True(t, changed)
	require.NotNil(t, s.Retired)
	assert.Equal(t, "ops@example.com", s.Retired.By)
	assert.Equal(t, "requires attempts as a string by mistake", s.Retired.Reason)
	assert.WithinDuration(t, time.Now(), s.Retired.At, time.Minute)

	for _, r := range []*schema.Registry{a, b} {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			vs := r.Versions("", "doc.updated")
			require.Len(c, vs, 3, "retired versions stay listed")
			assert.NotNil(c, vs[1].Retired)
		}, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, 1, resolved(t, r, "", 2), "version 2 falls back to version 1")
		assert.Equal(t, 3, resolved(t, r, "", 3))
		exact, err := r.Exact(ctx, "", "doc.updated", 2)
		require.NoError(t, err)
		assert.Equal(t, 2, exact.Version())
		assert.NotEmpty(t, exact.Validate(okEvent()), "the retired version itself is unchanged")
	}

	// Retiring again changes nothing and records nothing.
	again, changed, err := a.Retire(ctx, "", "doc.updated", 2, "someone else", "again")
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, "ops@example.com", again.Retired.By)

	_, _, err = a.Retire(ctx, "", "doc.updated", 1, "ops@example.com", "wrong too")
	require.NoError(t, err)
	assert.Equal(t, 0, resolved(t, a, "", 2), "no version before 2 in force: no schema applies")
	assert.Equal(t, 0, resolved(t, a, "", 0), "nor to events naming none (version 1)")
	_, err = schema.Resolve(ctx, a, "", "doc.updated", 4)
	assert.ErrorIs(t, err, schema.ErrUnknownVersion)

	s4, err := a.Create(ctx, "doc.updated", definition(t, "number"))
	require.NoError(t, err)
	assert.Equal(t, 4, s4.Version, "numbers are never reused")

	_, _, err = a.Retire(ctx, "", "doc.updated", 9, "ops@example.com", "no such version")
	assert.ErrorIs(t, err, schema.ErrUnknownVersion)
	_, _, err = a.Retire(ctx, "", "no.such", 1, "ops@example.com", "no such action")
	assert.ErrorIs(t, err, schema.ErrUnknownVersion)

	assert.Equal(t, []string{
		"schema.created /doc.updated/1", "schema.created /doc.updated/2", "schema.created /doc.updated/3",
		"schema.retired /doc.updated/2", "schema.retired /doc.updated/1", "schema.created /doc.updated/4",
	}, audit.list(), "each change is told to the audit hook once")
}

// An organization whose own versions of an action are all retired is back on the environment's.
func TestRetiringAnOrganizationsSchemaFallsBackToTheEnvironments(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	r, err := schema.NewRegistry(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer r.Close()
	env, err := r.Create(ctx, "doc.updated", definition(t, "number"))
	require.NoError(t, err)
	own, err := r.CreateFor(ctx, "org_a", "doc.updated", definition(t, "string"))
	require.NoError(t, err)
	c, err := schema.Resolve(ctx, r, "org_a", "doc.updated", 0)
	require.NoError(t, err)
	assert.Equal(t, "org_a", c.OrganizationID())

	_, _, err = r.Retire(ctx, "org_a", "doc.updated", own.Version, "ops", "the environment's is right")
	require.NoError(t, err)
	c, err = schema.Resolve(ctx, r, "org_a", "doc.updated", 0)
	require.NoError(t, err)
	assert.Equal(t, "", c.OrganizationID())
	assert.Equal(t, env.Version, c.Version())
	assert.Nil(t, c.Validate(okEvent()))
	exact, err := r.Exact(ctx, "org_a", "doc.updated", 1)
	require.NoError(t, err)
	assert.Equal(t, "org_a", exact.OrganizationID())
}

// A version stored by an earlier release that this release refuses (here the 2^30 chain, written
// with the document paths earlier releases resolved) is loaded as retired: it applies to no event
// and costs nothing, and it is listed with the reason.
func TestStoredVersionThisReleaseRefusesIsRetired(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	kv, err := js.KeyValue(ctx, event.BucketSchemas)
	require.NoError(t, err)
	var d schema.Definition
	require.NoError(t, json.Unmarshal([]byte(refChain(30, "#/properties/metadata")), &d))
	raw, err := json.Marshal(schema.Schema{Action: "doc.poisoned", Version: 1, CreatedAt: time.Now().UTC(), Definition: d})
	require.NoError(t, err)
	_, err = kv.Create(ctx, "env/doc.poisoned/1", raw)
	require.NoError(t, err)

	r, err := schema.NewRegistry(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer r.Close()
	vs := r.Versions("", "doc.poisoned")
	require.Len(t, vs, 1)
	require.NotNil(t, vs[0].Retired)
	assert.Equal(t, "logbook", vs[0].Retired.By)
	assert.Contains(t, vs[0].Retired.Reason, "does not point to a schema inside")
	c, err := schema.Resolve(ctx, r, "org_a", "doc.poisoned", 0)
	require.NoError(t, err)
	assert.Nil(t, c, "no schema applies")
	_, err = r.Exact(ctx, "", "doc.poisoned", 1)
	assert.ErrorIs(t, err, schema.ErrInvalid)

	// The operator can still retire it for the record.
	s, changed, err := r.Retire(ctx, "", "doc.poisoned", 1, "ops", "poison from before the cost bound")
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, "ops", s.Retired.By)
}

// Replicas retiring the same version at once: one retirement is stored and told to the audit
// hook; the others find it and change nothing.
func TestConcurrentRetirementsStoreOne(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	audit := &recordedAudit{}
	regs := make([]*schema.Registry, 4)
	for i := range regs {
		r, err := schema.NewRegistry(ctx, js, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		defer r.Close()
		r.UseAudit(audit)
		regs[i] = r
	}
	_, err := regs[0].Create(ctx, "doc.updated", definition(t, "number"))
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var changed []string
	for i, r := range regs {
		wg.Go(func() {
			s, ok, err := r.Retire(ctx, "", "doc.updated", 1, fmt.Sprintf("replica %d", i), "race")
			assert.NoError(t, err)
			if ok {
				mu.Lock()
				changed = append(changed, s.Retired.By)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, changed, 1)
	assert.Equal(t, []string{"schema.created /doc.updated/1", "schema.retired /doc.updated/1"}, audit.list())
	for _, r := range regs {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			vs := r.Versions("", "doc.updated")
			require.Len(c, vs, 1)
			require.NotNil(c, vs[0].Retired)
			assert.Equal(c, changed[0], vs[0].Retired.By)
		}, 5*time.Second, 10*time.Millisecond)
	}
}
