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

// A newest-first walk reads recent windows first; pages that straddle windows, cursors inside
// them, filters and ranges still give every event once, in (occurred_at, id) order, newest first.
func TestNewestFirstPagesAcrossWindows(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	ago := []time.Duration{-time.Hour, 0, time.Minute, time.Hour, 23 * time.Hour, 25 * time.Hour, 3 * 24 * time.Hour,
		7*24*time.Hour + 23*time.Hour, 9 * 24 * time.Hour, 30 * 24 * time.Hour, 63 * 24 * time.Hour, 65 * 24 * time.Hour,
		200 * 24 * time.Hour, 400 * 24 * time.Hour}
	var recs []*event.Record
	var want []string // newest first
	for i, d := range ago {
		for j := range 2 { // two events at the same instant: the id breaks the tie
			r := storetest.Record(org, 2*i+j, now.Add(-d))
			if j == 1 {
				r.Event.Actor.ID = "user_2"
			}
			recs = append(recs, r)
		}
		want = append(want, recs[2*i+1].ID, recs[2*i].ID)
	}
	require.NoError(t, s.Insert(ctx, "windows-"+org, recs))

	walk := func(f store.Filter, limit int) []string {
		var got []string
		var from *store.Position
		for range 100 {
			page, err := s.Search(ctx, f, true, from, limit)
			require.NoError(t, err)
			for _, e := range page {
				got = append(got, e.ID)
			}
			if len(page) < limit {
				return got
			}
			last := page[len(page)-1]
			from = &store.Position{OccurredAt: last.OccurredAt, ID: last.ID}
		}
		t.Fatal("walk did not end")
		return nil
	}
	for _, limit := range []int{1, 3, 5, 100} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			assert.Equal(t, want, walk(store.Filter{Org: org}, limit))
			var mine []string
			for i := 0; i < len(want); i += 2 {
				mine = append(mine, want[i])
			}
			assert.Equal(t, mine, walk(store.Filter{Org: org, ActorIDs: []string{"user_2"}}, limit))
			start, end := now.Add(-64*24*time.Hour), now.Add(-2*time.Hour)
			var ranged []string
			for i, d := range ago {
				at := now.Add(-d)
				if !at.Before(start) && at.Before(end) {
					ranged = append(ranged, want[2*i], want[2*i+1])
				}
			}
			assert.Equal(t, ranged, walk(store.Filter{Org: org, Start: start, End: end}, limit))
		})
	}
}
