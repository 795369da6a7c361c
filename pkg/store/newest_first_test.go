package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
			var rangedMine []string
			for i := 0; i < len(ranged); i += 2 {
				rangedMine = append(rangedMine, ranged[i])
			}
			assert.Equal(t, rangedMine, walk(store.Filter{Org: org, ActorIDs: []string{"user_2"}, Start: start, End: end}, limit))
		})
	}
}

// statementCounter passes every statement to the real engine and counts the SELECTs.
type statementCounter struct {
	store.DB
	n *int
}

func (c statementCounter) Query(ctx context.Context, q string, p store.Params) (store.Rows, error) {
	*c.n++
	return c.DB.Query(ctx, q, p)
}

// A newest-first page of a sparse filter does not step through every window: the rows found so
// far tell how far back the page must reach, and once a filter found (almost) nothing in the last
// 8 days the rest is read in one statement. The page is the same as through every window.
func TestNewestFirstSparseFilterSkipsWindows(t *testing.T) {
	ctx := context.Background()
	var stmts int
	s := storetest.Shared(t).Decorate(func(db store.DB) store.DB { return statementCounter{DB: db, n: &stmts} })
	org := storetest.NewOrg(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var recs []*event.Record
	add := func(actor string, at time.Time) {
		r := storetest.Record(org, len(recs), at)
		r.Event.Actor.ID = actor
		recs = append(recs, r)
	}
	for i := range 40 { // the organization's own traffic: dense in every window
		add("user_busy", now.Add(-time.Duration(i)*time.Hour))
		add("user_busy", now.Add(-time.Duration(i)*24*time.Hour-time.Minute))
	}
	// user_rare: nothing in the last 8 days, a few events further back.
	for _, d := range []int{9, 30, 70, 200} {
		add("user_rare", now.Add(-time.Duration(d)*24*time.Hour))
	}
	// user_mid: 5 events a day, in the last day and over the next 20 days.
	for h := range 21 * 24 {
		if h%5 == 0 {
			add("user_mid", now.Add(-time.Duration(h)*time.Hour-time.Second))
		}
	}
	require.NoError(t, s.Insert(ctx, "sparse-"+org, recs))
	newestFirst := func(actor string) []string { // what a single query over everything returns
		var mine []*event.Record
		for _, r := range recs {
			if r.Event.Actor.ID == actor {
				mine = append(mine, r)
			}
		}
		slices.SortFunc(mine, func(a, b *event.Record) int {
			if c := b.Event.OccurredAt.Compare(a.Event.OccurredAt); c != 0 {
				return c
			}
			return strings.Compare(b.ID, a.ID)
		})
		var ids []string
		for _, r := range mine {
			ids = append(ids, r.ID)
		}
		return ids
	}

	for _, tt := range []struct {
		actor      string
		limit      int
		statements int // through every window: 4 for user_rare, 3 for user_mid
	}{
		{"user_rare", 10, 3},  // the last day, the last 8 days (nothing), then the rest at once
		{"user_mid", 50, 2},   // the last day (5 rows) says 8 days are too few: then 64 days
		{"user_busy", 1, 1},   // filled in the last day
		{"user_mid", 1000, 3}, // no window can fill it: the last day, the last 8 days, the rest
	} {
		t.Run(fmt.Sprint(tt.actor, " ", tt.limit), func(t *testing.T) {
			stmts = 0
			page, err := s.Search(ctx, store.Filter{Org: org, ActorIDs: []string{tt.actor}}, true, nil, tt.limit)
			require.NoError(t, err)
			var got []string
			for _, e := range page {
				got = append(got, e.ID)
			}
			want := newestFirst(tt.actor)
			assert.Equal(t, want[:min(tt.limit, len(want))], got)
			assert.Equal(t, tt.statements, stmts, "statements")
		})
	}
}
