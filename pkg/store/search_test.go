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

func TestSearchFilters(t *testing.T) {
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	corpus(t, s, org)
	other := storetest.NewOrg(t)
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

func TestSearchNeedsAnOrganization(t *testing.T) {
	s := storetest.Shared(t)
	_, err := s.Search(context.Background(), store.Filter{ActorIDs: []string{"user_1"}}, true, nil, 10)
	assert.ErrorIs(t, err, store.ErrNoOrg)
}

func TestGetIsScopedToTheOrganization(t *testing.T) {
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	corpus(t, s, org)
	e, err := s.Get(context.Background(), org, "01c")
	require.NoError(t, err)
	assert.Equal(t, "01c", e.ID)
	_, err = s.Get(context.Background(), storetest.NewOrg(t), "01c")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func TestRetentionHidesExpiredRows(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	old := record(org, 1, now.Add(-40*24*time.Hour))
	recent := record(org, 2, now.Add(-time.Hour))
	require.NoError(t, s.InsertWithRetention(ctx, "test:"+org, []*event.Record{old, recent},
		func(string) uint16 { return 30 }))
	got, err := s.Search(ctx, store.Filter{Org: org}, true, nil, 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "an event past its organization's retention is never returned")
	assert.Equal(t, recent.ID, got[0].ID)
}

func TestEachStreamsInOrder(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	base := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	var recs []*event.Record
	for i := 0; i < 3000; i++ {
		recs = append(recs, record(org, i, base.Add(time.Duration(i)*time.Second)))
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
