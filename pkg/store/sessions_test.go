package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// With every read session of the embedded engine busy with slow statements, the writer's INSERTs
// and the readiness check (the engine's priority session) still run at once.
func TestInsertsAndPingDoNotWaitBehindReads(t *testing.T) {
	db := storetest.SharedEngine(t)
	st := storetest.Shared(t)
	ctx := context.Background()
	var slowDone atomic.Int32
	var wg sync.WaitGroup
	defer wg.Wait()
	for range chdb.ReadSessions {
		wg.Go(func() {
			rows, err := db.Query(ctx, "SELECT sleep(3) /* store-busy-marker */", nil)
			if err == nil {
				err = rows.Close()
			}
			require.NoError(t, err)
			slowDone.Add(1)
		})
	}
	require.Eventually(t, func() bool {
		var n uint64
		err := db.Each(ctx, "SELECT count() FROM system.processes WHERE query LIKE '%store-busy-marker%' AND query NOT LIKE '%system.processes%'",
			nil, []any{&n}, func() error { return nil })
		return err == nil && n == chdb.ReadSessions
	}, 10*time.Second, 20*time.Millisecond, "the slow statements never all ran")

	org := storetest.NewOrg(t)
	writer := store.New(db.Priority())
	require.NoError(t, writer.Insert(ctx, "sessions-"+org, []*event.Record{record(org, 1, time.Now())}))
	require.NoError(t, writer.Ping(ctx))
	stored, err := writer.StoredIDs(ctx, []*event.Record{record(org, 1, time.Now())})
	require.NoError(t, err)
	require.Len(t, stored, 1)
	require.Zero(t, slowDone.Load(), "the insert or the ping waited for the slow reads")
	_ = st
}

// Scans (free-text searches) hold at most all read sessions but one: with more scans waiting than
// there are sessions, a read the sort key serves still runs at once.
func TestScansLeaveASessionForOtherReads(t *testing.T) {
	db := storetest.SharedEngine(t)
	ctx := context.Background()
	var done atomic.Int32
	var wg sync.WaitGroup
	defer wg.Wait()
	for range chdb.ReadSessions {
		wg.Go(func() {
			rows, err := db.Query(store.AsScan(ctx), "SELECT sleep(2) /* scan-marker */", nil)
			if err == nil {
				err = rows.Close()
			}
			require.NoError(t, err)
			done.Add(1)
		})
	}
	runningScans := func() uint64 {
		var n uint64
		require.NoError(t, db.Each(ctx, "SELECT count() FROM system.processes WHERE query LIKE '%scan-marker%' AND query NOT LIKE '%system.processes%'",
			nil, []any{&n}, func() error { return nil }))
		return n
	}
	require.Eventually(t, func() bool { return runningScans() == chdb.ReadSessions-1 }, 10*time.Second, 20*time.Millisecond)
	rows, err := db.Query(ctx, "SELECT 1", nil)
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	assert.Zero(t, done.Load(), "the read waited for a scan")
	assert.Equal(t, uint64(chdb.ReadSessions-1), runningScans(), "one scan waits for a token")
}
