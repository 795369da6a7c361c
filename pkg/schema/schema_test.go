package schema_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
)

// The body the Node SDK sends for createSchema (observed on the wire).
const nodeSchema = `{"actor":{"metadata":{"type":"object","properties":{"role":{"type":"string"}}}},
  "targets":[{"type":"team","metadata":{"type":"object","properties":{"plan":{"type":"string"}}}}],
  "metadata":{"type":"object","properties":{"attempts":{"type":"number"}}}}`

func okEvent() *event.Event {
	return &event.Event{
		Action:   "user.signed_in",
		Actor:    event.Entity{ID: "u", Type: "user", Metadata: map[string]any{"role": "admin"}},
		Targets:  []event.Entity{{ID: "t", Type: "team", Metadata: map[string]any{"plan": "pro"}}},
		Metadata: map[string]any{"attempts": json.Number("1")},
	}
}

func compile(t *testing.T, body string) *schema.Compiled {
	t.Helper()
	d, err := schema.ParseDefinition([]byte(body))
	require.NoError(t, err)
	c, err := schema.Compile(d)
	require.NoError(t, err)
	return c
}

func TestValidateAcceptsConformingEvent(t *testing.T) {
	assert.Nil(t, compile(t, nodeSchema).Validate(okEvent()))
}

func TestValidateReportsInstancePaths(t *testing.T) {
	c := compile(t, nodeSchema)
	tests := []struct {
		name  string
		patch func(e *event.Event)
		path  string
	}{
		{"actor metadata type", func(e *event.Event) { e.Actor.Metadata["role"] = json.Number("3") }, "/actor/metadata/role"},
		{"target metadata type", func(e *event.Event) { e.Targets[0].Metadata["plan"] = true }, "/targets/0/metadata/plan"},
		{"unlisted target type", func(e *event.Event) { e.Targets = append(e.Targets, event.Entity{ID: "x", Type: "invoice"}) }, "/targets/1/type"},
		{"event metadata type", func(e *event.Event) { e.Metadata["attempts"] = "many" }, "/metadata/attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := okEvent()
			tt.patch(e)
			errs := c.Validate(e)
			require.NotEmpty(t, errs)
			var paths []string
			for _, ie := range errs {
				paths = append(paths, ie.InstancePath)
			}
			assert.Contains(t, paths, tt.path)
		})
	}
}

func TestRequiredMetadataIsEnforcedWhenAbsent(t *testing.T) {
	c := compile(t, `{"targets":[{"type":"team"}],"metadata":{"type":"object","required":["reason"],"properties":{"reason":{"type":"string"}}}}`)
	e := okEvent()
	e.Metadata = nil
	assert.NotEmpty(t, c.Validate(e))
}

func TestParseDefinitionRefusesUnsafeOrBadSchemas(t *testing.T) {
	for name, body := range map[string]string{
		"no targets":             `{"targets":[]}`,
		"target without type":    `{"targets":[{}]}`,
		"duplicate type":         `{"targets":[{"type":"a"},{"type":"a"}]}`,
		"remote ref":             `{"targets":[{"type":"a"}],"metadata":{"$ref":"https://example.com/s.json"}}`,
		"file ref":               `{"targets":[{"type":"a"}],"metadata":{"$ref":"file:///etc/passwd"}}`,
		"id":                     `{"targets":[{"type":"a"}],"metadata":{"$id":"https://example.com/x"}}`,
		"foreign $schema":        `{"targets":[{"type":"a"}],"metadata":{"$schema":"http://json-schema.org/draft-04/schema#"}}`,
		"not an object":          `{"targets":[{"type":"a"}],"metadata":"string"}`,
		"actor without metadata": `{"actor":{},"targets":[{"type":"a"}]}`,
		"unknown field":          `{"targets":[{"type":"a"}],"extra":1}`,
		"too deep":               `{"targets":[{"type":"a"}],"metadata":` + deep(40) + `}`,
		"malformed":              `{"targets":`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := schema.ParseDefinition([]byte(body))
			assert.ErrorIs(t, err, schema.ErrInvalid)
		})
	}
}

func deep(n int) string {
	s := `{"type":"object"}`
	for i := 0; i < n; i++ {
		s = `{"type":"object","properties":{"a":` + s + `}}`
	}
	return s
}

func TestRegistryVersionsAndSharing(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.DiscardHandler)
	a, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	defer a.Close()

	c, err := a.Lookup(ctx, "user.signed_in", 0)
	require.NoError(t, err)
	assert.Nil(t, c, "no schema: anything goes")

	d, err := schema.ParseDefinition([]byte(nodeSchema))
	require.NoError(t, err)
	s1, err := a.Create(ctx, "user.signed_in", d)
	require.NoError(t, err)
	assert.Equal(t, 1, s1.Version)
	s2, err := a.Create(ctx, "user.signed_in", d)
	require.NoError(t, err)
	assert.Equal(t, 2, s2.Version, "each create is a new immutable version")

	_, err = a.Lookup(ctx, "user.signed_in", 3)
	assert.ErrorIs(t, err, schema.ErrUnknownVersion)

	// A second registry (another replica) sees the same versions from the bucket.
	b, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	defer b.Close()
	require.Len(t, b.Versions("", "user.signed_in"), 2)
	c, err = b.Lookup(ctx, "user.signed_in", 2)
	require.NoError(t, err)
	require.NotNil(t, c)
	assert.Nil(t, c.Validate(okEvent()))
	assert.Equal(t, []string{"user.signed_in"}, b.Actions())
}

func TestRegistryConcurrentCreatesGetDistinctVersions(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.DiscardHandler)
	regs := make([]*schema.Registry, 4)
	for i := range regs {
		r, err := schema.NewRegistry(ctx, js, log)
		require.NoError(t, err)
		defer r.Close()
		regs[i] = r
	}
	d, err := schema.ParseDefinition([]byte(nodeSchema))
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(r *schema.Registry) {
			defer wg.Done()
			s, err := r.Create(ctx, "doc.updated", d)
			assert.NoError(t, err)
			if err == nil {
				mu.Lock()
				assert.False(t, seen[s.Version], "version %d handed out twice", s.Version)
				seen[s.Version] = true
				mu.Unlock()
			}
		}(regs[i%len(regs)])
	}
	wg.Wait()
	assert.Len(t, seen, 12)
}

// An organization's own schema for an action replaces the environment's for that organization's
// events only, on every replica; other organizations keep the environment's.
func TestOrganizationSchemaTakesPrecedence(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.DiscardHandler)
	a, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	defer a.Close()
	env, err := schema.ParseDefinition([]byte(nodeSchema))
	require.NoError(t, err)
	_, err = a.Create(ctx, "user.signed_in", env)
	require.NoError(t, err)
	// org_strict wants attempts as a string: the okEvent (a number) breaks its schema.
	strict, err := schema.ParseDefinition([]byte(`{"targets":[{"type":"team"}],
	  "metadata":{"type":"object","properties":{"attempts":{"type":"string"}}}}`))
	require.NoError(t, err)
	s, err := a.CreateFor(ctx, "org_strict", "user.signed_in", strict)
	require.NoError(t, err)
	assert.Equal(t, 1, s.Version, "an organization's versions count on their own")
	assert.Equal(t, "org_strict", s.OrganizationID)

	b, err := schema.NewRegistry(ctx, js, log) // another replica
	require.NoError(t, err)
	defer b.Close()
	for _, r := range []*schema.Registry{a, b} {
		c, err := schema.Resolve(ctx, r, "org_strict", "user.signed_in", 0)
		require.NoError(t, err)
		errs := c.Validate(okEvent())
		require.Len(t, errs, 1)
		assert.Equal(t, "/metadata/attempts", errs[0].InstancePath)
		c, err = schema.Resolve(ctx, r, "org_other", "user.signed_in", 0)
		require.NoError(t, err)
		assert.Nil(t, c.Validate(okEvent()), "other organizations keep the environment's schema")
		_, err = schema.Resolve(ctx, r, "org_strict", "user.signed_in", 2)
		assert.ErrorIs(t, err, schema.ErrUnknownVersion)
		assert.Equal(t, []string{"user.signed_in"}, r.Actions(), "organization schemas are not environment actions")
		assert.Len(t, r.Versions("org_strict", "user.signed_in"), 1)
		assert.Len(t, r.Versions("", "user.signed_in"), 1)
	}
}
