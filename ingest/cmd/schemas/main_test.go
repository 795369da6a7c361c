package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/schema"
)

// An operator retires a version with the command against the cluster's registry: the running
// registry (a gateway's, say) sees it, and list shows it with who and why.
func TestRetireAndList(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	running, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	defer running.Close()
	for _, typ := range []string{"number", "string"} {
		d, err := schema.ParseDefinition([]byte(`{"targets":[{"type":"team"}],"metadata":{"properties":{"n":{"type":"` + typ + `"}}}}`))
		require.NoError(t, err)
		_, err = running.Create(ctx, "doc.updated", d)
		require.NoError(t, err)
	}

	var out bytes.Buffer
	require.NoError(t, run(ctx, js, log, []string{"retire", "-reason", "n is a number", "-by", "alice", "doc.updated", "2"}, &out))
	var got map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &got), out.String())
	assert.Equal(t, true, got["retired"])
	assert.Equal(t, "alice", got["retired_by"])
	assert.Equal(t, "n is a number", got["retired_reason"])

	require.Eventually(t, func() bool {
		c, err := schema.Resolve(ctx, running, "org_a", "doc.updated", 2)
		return err == nil && c != nil && c.Version() == 1
	}, 5*time.Second, 10*time.Millisecond, "the running registry falls back to version 1")

	out.Reset()
	require.NoError(t, run(ctx, js, log, []string{"list", "doc.updated"}, &out))
	var list []map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &list), out.String())
	require.Len(t, list, 2)
	assert.Equal(t, false, list[0]["retired"])
	assert.Equal(t, true, list[1]["retired"])

	for _, args := range [][]string{
		{"retire", "doc.updated", "1"},                   // no reason
		{"retire", "-reason", "x", "doc.updated", "one"}, // bad version
		{"retire", "-reason", "x", "doc.updated"},        // no version
		{"remove", "doc.updated"},                        // no such command
		{},
	} {
		var u usageError
		assert.ErrorAs(t, run(ctx, js, log, args, io.Discard), &u, "%v", args)
	}
	assert.ErrorIs(t, run(ctx, js, log, []string{"retire", "-reason", "x", "doc.updated", "7"}, io.Discard), schema.ErrUnknownVersion)
	assert.Error(t, run(ctx, js, log, []string{"list", "-org", "org_a", "doc.updated"}, io.Discard), "org_a has none of its own")
}
