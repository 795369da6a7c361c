package app

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
)

// An export is stored in full 128 KiB chunks: each chunk is a stream message and a disk sync, and a
// pipe's few-KB writes once made exports of a million rows into tens of thousands of chunks, which
// failed ("too many outstanding async published messages").
func TestExportIsStoredInFullChunks(t *testing.T) {
	a := startEnv(t, nil)
	c := a.client(t, testKey)
	base := time.Now().UTC().Add(-10 * 24 * time.Hour)
	const n = 30_000
	recs := make([]*event.Record, n)
	for k := range recs {
		recs[k] = &event.Record{ID: fmt.Sprintf("01CHUNK%019d", k), OrganizationID: "org_chunks", ReceivedAt: base,
			Event: event.Event{Action: "user.signed_in", OccurredAt: base.Add(time.Duration(k) * time.Second),
				Actor:    event.Entity{ID: "user_1", Type: "user", Name: "Jon Smith"},
				Targets:  []event.Entity{{ID: "team_1", Type: "team"}},
				Context:  event.Context{Location: "123.123.123.123"},
				Metadata: map[string]any{"attempt": k}}}
	}
	require.NoError(t, a.Store().Insert(context.Background(), "chunks", recs))
	body, _ := json.Marshal(map[string]any{"organization_id": "org_chunks",
		"range_start": base.Add(-time.Hour).Format(time.RFC3339Nano), "range_end": time.Now().UTC().Format(time.RFC3339Nano)})
	r := c.do("POST", "/audit_logs/exports", body)
	require.Equal(t, 201, r.status, "%s", r.raw)
	id := r.body["id"].(string)
	r = c.pollExport(id)
	require.Equal(t, "ready", r.body["state"], "%s", r.raw)

	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	files, err := js.ObjectStore(context.Background(), event.ObjectsExports)
	require.NoError(t, err)
	info, err := files.GetInfo(context.Background(), id+".csv")
	require.NoError(t, err)
	assert.Greater(t, info.Size, uint64(2<<20), "a few MB of CSV")
	assert.LessOrEqual(t, uint64(info.Chunks), info.Size/(128<<10)+1, "full chunks: %d for %d bytes", info.Chunks, info.Size)
}
