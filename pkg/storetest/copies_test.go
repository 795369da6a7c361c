package storetest_test

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

// The duplicate check can fail: the same event stored under two tokens (as two writers grouping
// it into different batches would) is reported, and stays reported after ClickHouse was asked to
// merge, which on a ReplacingMergeTree with merges running collapses the two rows into one.
func TestCopiesSeesADuplicateAMergeWouldHide(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	at := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	dup, single := storetest.Record(org, 1, at), storetest.Record(org, 2, at)
	require.NoError(t, s.Insert(ctx, "copies:"+org+":a", []*event.Record{dup, single}))
	require.NoError(t, s.Insert(ctx, "copies:"+org+":b", []*event.Record{dup}))
	// ... and twice inside one INSERT block, which optimize_on_insert would collapse on the spot.
	twice := storetest.Record(org, 3, at)
	require.NoError(t, s.Insert(ctx, "copies:"+org+":c", []*event.Record{twice, twice}))
	var db store.DB
	s.Decorate(func(d store.DB) store.DB { db = d; return d })
	require.NoError(t, db.Exec(ctx, "OPTIMIZE TABLE events", nil))

	copies := storetest.Copies(t, s, org)
	assert.Equal(t, map[string]uint64{dup.ID: 2, single.ID: 1, twice.ID: 2}, copies)
	assert.Equal(t, []string{dup.ID, twice.ID}, storetest.Duplicates(t, s, org))
}
