package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// Every value reaches the engine verbatim, whatever characters it holds, in plain columns, arrays
// and maps alike.
func TestInsertKeepsOddCharacters(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	odd := []string{`it's`, `back\slash`, "tab\there", "new\nline", `quote"d`, `\'`, `['x']`, "{'k':'v'}", "ü ✓"}
	at := time.Date(2026, 9, 9, 9, 9, 9, 0, time.UTC)
	var recs []*event.Record
	for i, v := range odd {
		recs = append(recs, &event.Record{ID: "01ODD" + string(rune('A'+i)), OrganizationID: org, ReceivedAt: at,
			Event: event.Event{Action: "a.b", OccurredAt: at.Add(time.Duration(i) * time.Second),
				Actor:    event.Entity{ID: v, Type: "user", Name: v},
				Targets:  []event.Entity{{ID: v, Type: v, Name: v}},
				Context:  event.Context{Location: v, UserAgent: v},
				Metadata: map[string]any{"k": v}}})
	}
	require.NoError(t, s.Insert(ctx, "odd:"+org, recs))
	for i, v := range odd {
		for name, f := range map[string]store.Filter{
			"actor id":    {Org: org, ActorIDs: []string{v}},
			"target id":   {Org: org, TargetIDs: []string{v}},
			"target type": {Org: org, TargetTypes: []string{v}},
		} {
			got, err := s.Search(ctx, f, true, nil, 10)
			require.NoError(t, err, "%s %q", name, v)
			require.Len(t, got, 1, "%s %q", name, v)
			assert.Equal(t, recs[i].ID, got[0].ID)
			assert.Equal(t, v, got[0].ActorName)
			assert.Equal(t, v, got[0].UserAgent)
		}
	}
}
