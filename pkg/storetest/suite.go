package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
)

// Case is one store test, written against any backend.
type Case struct {
	Name string
	Run  func(t *testing.T, s *store.Store)
}

// Suite is what every store backend must pass: the embedded engine (pkg/store's tests) and a
// ClickHouse server through clickhouse-go (deploy/servertest, where a Docker engine exists). Each
// case keeps to organizations of its own (NewOrg), so the cases share one migrated store.
var Suite = []Case{
	{"MigrateIsIdempotent", migrateIsIdempotent},
	{"InsertDedupByToken", insertDedupByToken},
	{"InsertRefusesBadToken", insertRefusesBadToken},
	{"PageWalksBothWaysWithoutGapsOrRepeats", pageWalksBothWaysWithoutGapsOrRepeats},
	{"PageBindsValuesAsParameters", pageBindsValuesAsParameters},
	{"StoredEventRoundTrips", storedEventRoundTrips},
	{"OddTextParametersAreHarmless", oddTextParametersAreHarmless},
	{"EventsTableSettings", eventsTableSettings},
	{"SearchFilters", searchFilters},
	{"SearchNeedsAnOrganization", searchNeedsAnOrganization},
	{"GetIsScopedToTheOrganization", getIsScopedToTheOrganization},
	{"RetentionHidesExpiredRows", retentionHidesExpiredRows},
	{"EachStreamsInOrder", eachStreamsInOrder},
	{"PartitionOfMatchesTheTable", partitionOfMatchesTheTable},
	{"TooManyPartitionsIsRefusedAsTooLarge", tooManyPartitionsIsRefusedAsTooLarge},
	{"EachIDCountsRowsPerID", eachIDCountsRowsPerID},
}

// RunSuite runs every case of Suite on s as a subtest.
func RunSuite(t *testing.T, s *store.Store) {
	for _, c := range Suite {
		t.Run(c.Name, func(t *testing.T) { c.Run(t, s) })
	}
}

// Record returns a user.signed_in event of org, numbered i, that occurred at at.
func Record(org string, i int, at time.Time) *event.Record {
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

func migrateIsIdempotent(t *testing.T, s *store.Store) {
	require.NoError(t, s.Migrate(context.Background()))
	require.NoError(t, s.Migrate(context.Background()))
}

func insertDedupByToken(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	recs := []*event.Record{Record(org, 1, base), Record(org, 2, base.Add(time.Minute))}

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

func insertRefusesBadToken(t *testing.T, s *store.Store) {
	err := s.Insert(context.Background(), "x'; DROP TABLE events --", nil)
	require.Error(t, err)
}

func pageWalksBothWaysWithoutGapsOrRepeats(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	other := NewOrg(t)
	base := time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC) // spans two months (two partitions)
	var recs []*event.Record
	for i := 0; i < 25; i++ {
		// pairs share a timestamp so the id breaks ties
		recs = append(recs, Record(org, i, base.Add(time.Duration(i/2)*17*time.Minute)))
	}
	require.NoError(t, s.Insert(ctx, "test:"+org, recs))
	require.NoError(t, s.Insert(ctx, "test:"+other, []*event.Record{Record(other, 99, base)}))

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

func pageBindsValuesAsParameters(t *testing.T, s *store.Store) {
	page, err := s.Page(context.Background(), "x' OR 1=1 --", true, nil, 10)
	require.NoError(t, err)
	assert.Empty(t, page)
}

func storedEventRoundTrips(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	at := time.Date(2026, 2, 2, 16, 35, 39, 317_000_000, time.UTC)
	r := Record(org, 7, at)
	require.NoError(t, s.Insert(ctx, "test:"+org, []*event.Record{r}))
	page, err := s.Page(ctx, org, true, nil, 1)
	require.NoError(t, err)
	require.Len(t, page, 1)
	assert.Equal(t, at, page[0].OccurredAt)
	assert.JSONEq(t, `{"action":"user.signed_in","occurred_at":"2026-02-02T16:35:39.317Z",
		"actor":{"id":"user_1","type":"user","name":"Jon"},"targets":[{"id":"team_1","type":"team"}],
		"context":{"location":"1.2.3.4"},"metadata":{"attempt":7}}`, string(page[0].JSON()))
}

func oddTextParametersAreHarmless(t *testing.T, s *store.Store) {
	for _, org := range []string{"a\\tb", "tab\there", "new\nline", `back\slash`, "quote'; DROP TABLE events --"} {
		page, err := s.Page(context.Background(), org, true, &store.Position{OccurredAt: time.Now(), ID: org}, 1)
		require.NoError(t, err, "%q", org)
		assert.Empty(t, page)
	}
}

// The events table keeps the settings exactly-once and durability rest on (they default to off).
func eventsTableSettings(t *testing.T, s *store.Store) {
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

// corpus stores a small, varied set of events for one organization and returns them by name.
func corpus(t *testing.T, s *store.Store, org string) map[string]*event.Record {
	t.Helper()
	base := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	mk := func(name, action, actorID, actorName, actorType string, minutes int, targets []event.Entity, meta map[string]any) *event.Record {
		return &event.Record{
			ID: "01" + name, OrganizationID: org, ReceivedAt: base,
			Event: event.Event{
				Action: action, OccurredAt: base.Add(time.Duration(minutes) * time.Minute),
				Actor:   event.Entity{ID: actorID, Type: actorType, Name: actorName},
				Targets: targets, Context: event.Context{Location: "10.0.0.1", UserAgent: "Firefox/120"},
				Metadata: meta,
			},
		}
	}
	team := []event.Entity{{ID: "team_1", Type: "team", Name: "Platform"}}
	doc := []event.Entity{{ID: "doc_9", Type: "document", Name: "Q3 Plan"}, {ID: "team_1", Type: "team"}}
	recs := map[string]*event.Record{
		"a": mk("a", "user.signed_in", "user_1", "Ada Lovelace", "user", 0, team, map[string]any{"method": "SSO"}),
		"b": mk("b", "user.signed_out", "user_1", "Ada Lovelace", "user", 10, team, nil),
		"c": mk("c", "document.updated", "user_2", "Grace O'Hopper", "user", 20, doc, map[string]any{"field": "Title"}),
		"d": mk("d", "document.deleted", "svc_1", "Backup\tBot", "service", 30, doc, map[string]any{"reason": "50%_off"}),
		"e": mk("e", "user.signed_in", "user_2", "Grace O'Hopper", "user", 40, nil, nil),
	}
	var all []*event.Record
	for _, r := range recs {
		all = append(all, r)
	}
	require.NoError(t, s.Insert(context.Background(), "test:"+org+":corpus", all))
	return recs
}

func searchFilters(t *testing.T, s *store.Store) {
	org := NewOrg(t)
	corpus(t, s, org)
	other := NewOrg(t)
	corpus(t, s, other)
	at := func(m int) time.Time { return time.Date(2026, 6, 1, 12, m, 0, 0, time.UTC) }
	tests := []struct {
		name string
		f    store.Filter
		want []string // newest first
	}{
		{"everything", store.Filter{}, []string{"e", "d", "c", "b", "a"}},
		{"exact action", store.Filter{Actions: []string{"user.signed_in"}}, []string{"e", "a"}},
		{"action prefix", store.Filter{Actions: []string{"document.*"}}, []string{"d", "c"}},
		{"prefix or exact", store.Filter{Actions: []string{"document.*", "user.signed_out"}}, []string{"d", "c", "b"}},
		{"actor id", store.Filter{ActorIDs: []string{"user_2"}}, []string{"e", "c"}},
		{"actor name with a quote", store.Filter{ActorNames: []string{"Grace O'Hopper"}}, []string{"e", "c"}},
		{"actor name with a tab", store.Filter{ActorNames: []string{"Backup\tBot"}}, []string{"d"}},
		{"actor type", store.Filter{ActorTypes: []string{"service"}}, []string{"d"}},
		{"target id", store.Filter{TargetIDs: []string{"doc_9"}}, []string{"d", "c"}},
		{"target type", store.Filter{TargetTypes: []string{"team"}}, []string{"d", "c", "b", "a"}},
		{"range", store.Filter{Start: at(10), End: at(30)}, []string{"c", "b"}},
		{"text in metadata, any case", store.Filter{Text: "sso"}, []string{"a"}},
		{"text in a target name", store.Filter{Text: "q3 pl"}, []string{"d", "c"}},
		{"text with LIKE wildcards is literal", store.Filter{Text: "50%_"}, []string{"d"}},
		{"text percent alone matches nothing by wildcard", store.Filter{Text: "%"}, []string{"d"}},
		{"combined", store.Filter{Actions: []string{"user.*"}, ActorIDs: []string{"user_1"}, Start: at(5)}, []string{"b"}},
		{"injection is a value", store.Filter{ActorIDs: []string{"x') OR 1=1 --"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Org = org
			got, err := s.Search(context.Background(), tt.f, true, nil, 100)
			require.NoError(t, err)
			var names []string
			for _, e := range got {
				require.Equal(t, org, e.OrganizationID)
				names = append(names, e.ID[2:])
			}
			assert.Equal(t, tt.want, names)
		})
	}
}

func searchNeedsAnOrganization(t *testing.T, s *store.Store) {
	_, err := s.Search(context.Background(), store.Filter{ActorIDs: []string{"user_1"}}, true, nil, 10)
	assert.ErrorIs(t, err, store.ErrNoOrg)
}

func getIsScopedToTheOrganization(t *testing.T, s *store.Store) {
	org := NewOrg(t)
	corpus(t, s, org)
	e, err := s.Get(context.Background(), org, "01c")
	require.NoError(t, err)
	assert.Equal(t, "01c", e.ID)
	_, err = s.Get(context.Background(), NewOrg(t), "01c")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func retentionHidesExpiredRows(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	old := Record(org, 1, now.Add(-40*24*time.Hour))
	recent := Record(org, 2, now.Add(-time.Hour))
	require.NoError(t, s.InsertWithRetention(ctx, "test:"+org, []*event.Record{old, recent},
		func(string) uint16 { return 30 }))
	got, err := s.Search(ctx, store.Filter{Org: org}, true, nil, 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "an event past its organization's retention is never returned")
	assert.Equal(t, recent.ID, got[0].ID)
}

func eachStreamsInOrder(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	base := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	var recs []*event.Record
	for i := 0; i < 3000; i++ {
		recs = append(recs, Record(org, i, base.Add(time.Duration(i)*time.Second)))
	}
	require.NoError(t, s.Insert(ctx, "test:"+org, recs))
	var ids []string
	require.NoError(t, s.Each(ctx, store.Filter{Org: org}, false, func(e *store.Event) error {
		ids = append(ids, e.ID)
		return nil
	}))
	require.Len(t, ids, 3000)
	assert.Equal(t, recs[0].ID, ids[0])
	assert.Equal(t, recs[2999].ID, ids[2999])

	stop := fmt.Errorf("enough")
	n := 0
	err := s.Each(ctx, store.Filter{Org: org}, true, func(e *store.Event) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	assert.ErrorIs(t, err, stop)
	assert.Equal(t, 10, n)
}

// rawDB returns the DB under s, for statements the Store does not offer.
func rawDB(s *store.Store) store.DB {
	var db store.DB
	s.Decorate(func(d store.DB) store.DB { db = d; return d })
	return db
}

// The writer's client-side partition key is the table's: store.PartitionOf gives, for every row,
// the partition ClickHouse put it in (times near month ends in other zones included).
func partitionOfMatchesTheTable(t *testing.T, s *store.Store) {
	ctx := context.Background()
	est := time.FixedZone("EST", -5*3600)
	times := []time.Time{
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 30, 0, 0, est), // January 2000 in UTC
		time.Date(2026, 2, 28, 23, 59, 59, 999e6, time.UTC),
		time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
	}
	days := map[string]uint16{}
	var recs []*event.Record
	for i, at := range times {
		org := NewOrg(t)
		days[org] = uint16(20_000 + i) // long enough that the TTL keeps every row
		recs = append(recs, Record(org, i, at))
	}
	require.NoError(t, s.InsertWithRetention(ctx, "partition:"+recs[0].OrganizationID, recs, func(org string) uint16 { return days[org] }))
	for _, r := range recs {
		var part string
		require.NoError(t, rawDB(s).Each(ctx, "SELECT toString(_partition_value) FROM events WHERE organization_id = {org:String}",
			store.Params{"org": store.Text(r.OrganizationID)}, []any{&part}, func() error { return nil }))
		assert.Equal(t, store.PartitionOf(r.Event.OccurredAt, days[r.OrganizationID]).String(), part, "row at %s", r.Event.OccurredAt)
	}
}

// An INSERT spanning more partitions than store.MaxPartitionsPerInsert is refused, and
// store.Classify recognises the refusal as "too large" (split it), whatever the backend's wording;
// exactly the limit is accepted.
func tooManyPartitionsIsRefusedAsTooLarge(t *testing.T, s *store.Store) {
	ctx := context.Background()
	org := NewOrg(t)
	var many []*event.Record
	for i := 0; i <= store.MaxPartitionsPerInsert; i++ {
		many = append(many, Record(org, i, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, i, 0)))
	}
	err := s.Insert(ctx, "partitions:"+org+":1", many)
	require.Error(t, err)
	assert.Equal(t, store.RefusedTooLarge, store.Classify(err), "%v", err)
	require.NoError(t, s.Insert(ctx, "partitions:"+org+":2", many[:store.MaxPartitionsPerInsert]))
}

// EachID counts rows per id, per organization and receive-time window.
func eachIDCountsRowsPerID(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a, b := NewOrg(t), NewOrg(t)
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	ra, rb := Record(a, 1, base), Record(b, 2, base.Add(time.Hour)) // received a second after occurring
	require.NoError(t, s.Insert(ctx, "eachid:"+a, []*event.Record{ra, rb}))
	require.NoError(t, s.Insert(ctx, "eachid:"+a+":again", []*event.Record{ra}))
	collect := func(f store.IDFilter) map[string]uint64 {
		out := map[string]uint64{}
		require.NoError(t, s.EachID(ctx, f, func(org, id string, rows uint64) error {
			if org == a || org == b {
				out[org+"/"+id] = rows
			}
			return nil
		}))
		return out
	}
	stopped, err := s.MergesStopped(ctx)
	require.NoError(t, err)
	if stopped { // with merges running, the two rows of ra may already be one
		assert.Equal(t, map[string]uint64{a + "/" + ra.ID: 2}, collect(store.IDFilter{Org: a}))
	}
	assert.Equal(t, map[string]uint64{b + "/" + rb.ID: 1}, collect(store.IDFilter{Org: b, From: base}))
	window := collect(store.IDFilter{From: base, To: base.Add(time.Hour)})
	assert.Contains(t, window, a+"/"+ra.ID)
	assert.NotContains(t, window, b+"/"+rb.ID, "received after the window")
}
