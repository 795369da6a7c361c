package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

func record(org string, i int, at time.Time) *event.Record {
	return &event.Record{
		ID:             fmt.Sprintf("01TEST%020d", i),
		OrganizationID: org,
		ReceivedAt:     at.Add(time.Second),
		Event: event.Event{
			Action:     "user.signed_in",
			OccurredAt: at,
			Actor:      event.Entity{ID: "user_1", Type: "user", Name: "Jon"},
			Targets:    []event.Entity{{ID: "team_1", Type: "team"}},
			Context:    event.Context{Location: "1.2.3.4"},
			Metadata:   map[string]any{"attempt": i},
		},
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	s := storetest.Shared(t)
	require.NoError(t, s.Migrate(context.Background()))
	require.NoError(t, s.Migrate(context.Background()))
}

func TestInsertDedupByToken(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	recs := []*event.Record{record(org, 1, base), record(org, 2, base.Add(time.Minute))}

	require.NoError(t, s.Insert(ctx, "test:"+org+":1-2", recs))
	require.NoError(t, s.Insert(ctx, "test:"+org+":1-2", recs), "a retried batch must succeed")
	total, distinct, err := s.Count(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), total, "the retried batch must not store rows twice")
	assert.Equal(t, uint64(2), distinct)

	// Identical rows under another token are a different batch and are stored (then visible as a
	// duplicate id, which Count reports).
	require.NoError(t, s.Insert(ctx, "test:"+org+":other", recs[:1]))
	total, distinct, err = s.Count(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), total)
	assert.Equal(t, uint64(2), distinct)
}

func TestInsertRefusesBadToken(t *testing.T) {
	s := storetest.Shared(t)
	err := s.Insert(context.Background(), "x'; DROP TABLE events --", nil)
	require.Error(t, err)
}

func TestPageWalksBothWaysWithoutGapsOrRepeats(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	other := storetest.NewOrg(t)
	base := time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC) // spans two months (two partitions)
	var recs []*event.Record
	for i := 0; i < 25; i++ {
		// pairs share a timestamp so the id breaks ties
		recs = append(recs, record(org, i, base.Add(time.Duration(i/2)*17*time.Minute)))
	}
	require.NoError(t, s.Insert(ctx, "test:"+org, recs))
	require.NoError(t, s.Insert(ctx, "test:"+other, []*event.Record{record(other, 99, base)}))

	var seen []string
	var from *store.Position
	for {
		page, err := s.Page(ctx, org, true, from, 7)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			require.Equal(t, org, e.OrganizationID, "another organization's event leaked into the page")
			seen = append(seen, e.ID)
		}
		last := page[len(page)-1]
		from = &store.Position{OccurredAt: last.OccurredAt, ID: last.ID}
	}
	require.Len(t, seen, 25)
	for i := range seen {
		assert.Equal(t, recs[24-i].ID, seen[i], "newest first, ties broken by id")
	}

	// Walking back toward newer events from the oldest returns the rest in ascending order.
	oldest := recs[0]
	up, err := s.Page(ctx, org, false, &store.Position{OccurredAt: oldest.Event.OccurredAt, ID: oldest.ID}, 100)
	require.NoError(t, err)
	require.Len(t, up, 24)
	assert.Equal(t, recs[1].ID, up[0].ID)
	assert.Equal(t, recs[24].ID, up[23].ID)
}

func TestPageBindsValuesAsParameters(t *testing.T) {
	s := storetest.Shared(t)
	page, err := s.Page(context.Background(), "x' OR 1=1 --", true, nil, 10)
	require.NoError(t, err)
	assert.Empty(t, page)
}

func TestStoredEventRoundTrips(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	at := time.Date(2026, 2, 2, 16, 35, 39, 317_000_000, time.UTC)
	r := record(org, 7, at)
	require.NoError(t, s.Insert(ctx, "test:"+org, []*event.Record{r}))
	page, err := s.Page(ctx, org, true, nil, 1)
	require.NoError(t, err)
	require.Len(t, page, 1)
	assert.Equal(t, at, page[0].OccurredAt)
	assert.JSONEq(t, `{"action":"user.signed_in","occurred_at":"2026-02-02T16:35:39.317Z",
		"actor":{"id":"user_1","type":"user","name":"Jon"},"targets":[{"id":"team_1","type":"team"}],
		"context":{"location":"1.2.3.4"},"metadata":{"attempt":7}}`, string(page[0].Event))
}

func TestOddTextParametersAreHarmless(t *testing.T) {
	s := storetest.Shared(t)
	for _, org := range []string{"a\\tb", "tab\there", "new\nline", `back\slash`, "quote'; DROP TABLE events --"} {
		page, err := s.Page(context.Background(), org, true, &store.Position{OccurredAt: time.Now(), ID: org}, 1)
		require.NoError(t, err, "%q", org)
		assert.Empty(t, page)
	}
}

// The events table keeps the settings exactly-once and durability rest on (they default to off).
func TestEventsTableSettings(t *testing.T) {
	s := storetest.Shared(t)
	ddl, err := s.CreateTableQuery(context.Background(), "events")
	require.NoError(t, err)
	for _, want := range []string{
		"non_replicated_deduplication_window = 10000", "fsync_after_insert = 1", "fsync_part_directory = 1",
		"ttl_only_drop_parts = 1", "PARTITION BY (toYYYYMM(occurred_at), retention_days)",
		"ORDER BY (organization_id, toStartOfHour(occurred_at), occurred_at, id)",
	} {
		assert.Contains(t, ddl, want)
	}
}
