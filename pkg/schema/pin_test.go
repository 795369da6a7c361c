package schema_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
)

// okEvent breaks this schema (attempts is a number).
const stringAttempts = `{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"attempts":{"type":"string"}}}}`

// ResolveRef names the version it resolved, and ResolveRecord validates a record against exactly
// that version whatever was registered since; a record without a reference is resolved afresh.
func TestSchemaReferences(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	reg, err := schema.NewRegistry(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer reg.Close()
	create := func(org, body string) {
		t.Helper()
		d, err := schema.ParseDefinition([]byte(body))
		require.NoError(t, err)
		_, err = reg.CreateFor(ctx, org, "user.signed_in", d)
		require.NoError(t, err)
	}
	record := func(org string, ref *event.SchemaRef) *event.Record {
		return &event.Record{ID: "01X", OrganizationID: org, Event: *okEvent(), Schema: ref}
	}
	valid := func(rec *event.Record) bool {
		t.Helper()
		c, err := schema.ResolveRecord(ctx, reg, rec)
		require.NoError(t, err)
		return c == nil || c.Validate(&rec.Event) == nil
	}

	// No schema yet: the reference says none.
	c, none, err := schema.ResolveRef(ctx, reg, "org_a", "user.signed_in", 0)
	require.NoError(t, err)
	assert.Nil(t, c)
	assert.Equal(t, &event.SchemaRef{Scope: event.SchemaNone}, none)

	// The environment's version 1 accepts okEvent.
	create("", nodeSchema)
	c, envV1, err := schema.ResolveRef(ctx, reg, "org_a", "user.signed_in", 0)
	require.NoError(t, err)
	require.NotNil(t, c)
	assert.Equal(t, &event.SchemaRef{Scope: event.SchemaEnv, Version: 1}, envV1, "version 0 means 1")

	// org_a's own version 1 refuses it.
	create("org_a", stringAttempts)
	c, orgV1, err := schema.ResolveRef(ctx, reg, "org_a", "user.signed_in", 1)
	require.NoError(t, err)
	assert.NotNil(t, c.Validate(okEvent()))
	assert.Equal(t, &event.SchemaRef{Scope: event.SchemaOrg, Version: 1}, orgV1)

	assert.True(t, valid(record("org_a", none)), "accepted under no schema: stored")
	assert.True(t, valid(record("org_a", envV1)), "accepted under the environment's v1: checked against it, not org_a's")
	assert.False(t, valid(record("org_a", orgV1)))
	assert.False(t, valid(record("org_a", nil)), "a record without a reference is resolved as today")
	assert.True(t, valid(record("org_b", nil)))

	for _, ref := range []*event.SchemaRef{{Scope: event.SchemaEnv, Version: 2}, {Scope: event.SchemaOrg, Version: 2}, {Scope: "team", Version: 1}} {
		_, err := schema.ResolveRecord(ctx, reg, record("org_a", ref))
		assert.ErrorIs(t, err, schema.ErrUnknownVersion, "%+v", ref)
	}
	_, err = schema.ResolveRecord(ctx, reg, record("org_b", &event.SchemaRef{Scope: event.SchemaOrg, Version: 1}))
	assert.ErrorIs(t, err, schema.ErrUnknownVersion, "org_b has no schema of its own")

	// Another replica finds a pinned version in the bucket.
	other, err := schema.NewRegistry(ctx, js, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer other.Close()
	c, err = other.Pinned(ctx, "org_a", "user.signed_in", 1)
	require.NoError(t, err)
	assert.NotNil(t, c.Validate(okEvent()))
}
