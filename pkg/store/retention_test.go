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

// The organization's current retention hides older events whatever their rows were stamped with,
// and DeleteOlderThan removes them for good, leaving younger events and other organizations alone.
func TestCurrentRetentionHidesAndDeletes(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org, other := storetest.NewOrg(t), storetest.NewOrg(t)
	now := time.Now().UTC()
	var recs, others []*event.Record
	for i, age := range []int{1, 10, 40, 400} { // days
		recs = append(recs, record(org, i, now.Add(-time.Duration(age)*24*time.Hour)))
		others = append(others, record(other, i, now.Add(-time.Duration(age)*24*time.Hour)))
	}
	// Written while the organization had no retention (stamped 0) or a year (365).
	require.NoError(t, s.InsertWithRetention(ctx, "test:"+org+":ret", recs, func(string) uint16 { return 0 }))
	require.NoError(t, s.InsertWithRetention(ctx, "test:"+other+":ret", others, func(string) uint16 { return 365 }))
	count := func(org string, days uint16) int {
		var n int
		require.NoError(t, s.Each(ctx, store.Filter{Org: org, RetentionDays: days}, true, func(*store.Event) error { n++; return nil }))
		return n
	}
	assert.Equal(t, 4, count(org, 0))
	assert.Equal(t, 3, count(other, 0), "the row's own stamp hides the 400-day-old event")
	assert.Equal(t, 2, count(org, 30), "the current retention hides what is older")
	got, err := s.Search(ctx, store.Filter{Org: org, RetentionDays: 30}, true, nil, 10)
	require.NoError(t, err)
	assert.Len(t, got, 2)
	_, err = s.Get(ctx, org, recs[2].ID)
	require.NoError(t, err, "Get without the current retention sees it")
	_, err = s.GetWithin(ctx, org, recs[2].ID, 30)
	require.ErrorIs(t, err, store.ErrNotFound, "GetWithin the current retention does not")

	require.NoError(t, s.DeleteOlderThan(ctx, org, 30))
	total, _, err := s.Count(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), total, "rows past the new retention are deleted")
	assert.Equal(t, 3, count(other, 0), "another organization keeps its rows")
	assert.Error(t, s.DeleteOlderThan(ctx, org, 0))
	assert.Equal(t, 2, count(org, 0))
}
