package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxPartitionsPerInsert is how many partitions one INSERT block may touch: ClickHouse's default
// max_partitions_per_insert_block, stated in every INSERT's settings (InsertSettings) so that a
// server profile cannot lower it under the writer's feet.
const MaxPartitionsPerInsert = 100

// Partition is the partition an events row lands in. It mirrors the table's
// PARTITION BY (toYYYYMM(occurred_at), retention_days) (migrations/0001_events.sql), computed on
// the client so the writer can group a batch's rows into INSERTs of at most
// MaxPartitionsPerInsert partitions each. TestPartitionOfMatchesTheTable holds the two together.
type Partition struct {
	Month         uint32 // toYYYYMM(occurred_at) in UTC, e.g. 202602
	RetentionDays uint16
}

// PartitionOf returns the partition of a row that occurred at t, stamped with retentionDays.
func PartitionOf(t time.Time, retentionDays uint16) Partition {
	t = t.UTC()
	return Partition{Month: uint32(t.Year()*100 + int(t.Month())), RetentionDays: retentionDays}
}

// String renders p as ClickHouse shows the partition value: (202602,30).
func (p Partition) String() string { return fmt.Sprintf("(%d,%d)", p.Month, p.RetentionDays) }

// Compare orders partitions by month, then retention.
func (p Partition) Compare(q Partition) int {
	return cmp.Or(cmp.Compare(p.Month, q.Month), cmp.Compare(p.RetentionDays, q.RetentionDays))
}

// mergesStoppedSettings keep every MergeTree merge from being selected: no set of parts is ever
// small enough to merge. Kept in the table's settings, they hold from the moment the engine loads
// the table, before any statement could run.
const mergesStoppedSettings = "max_bytes_to_merge_at_max_space_in_pool = 1, max_bytes_to_merge_at_min_space_in_pool = 1"

// StopMerges keeps every stored row visible, for tests that count duplicates: ReplacingMergeTree
// collapses rows with the same sorting key at some background merge, which would hide a duplicate
// from a check that runs after it. From now on no merge is selected on the events table (the
// settings above, kept in the table's definition, so they also hold from the engine's next start
// on, before any statement could run), and INSERTs through this Store and every Store decorating
// the same DB keep rows with the same id within one block (optimize_on_insert = 0). Mutations
// (the retention's lightweight DELETE) still run. Call it before the first INSERT: a merge already
// running is not stopped (SYSTEM STOP MERGES would, but it also holds up mutations).
// Never in production: merges are the backstop that collapses duplicates escaping insert dedup,
// and they keep the number of parts low.
func (s *Store) StopMerges(ctx context.Context) error {
	s.keepRows.Store(true)
	if err := s.db.Exec(ctx, "ALTER TABLE events MODIFY SETTING "+mergesStoppedSettings, nil); err != nil {
		return fmt.Errorf("failed to stop merges on events: %w", err)
	}
	return nil
}

// MergesStopped reports whether StopMerges has been applied to the events table (in this process
// or an earlier one on the same data).
func (s *Store) MergesStopped(ctx context.Context) (bool, error) {
	ddl, err := s.CreateTableQuery(ctx, "events")
	if err != nil {
		return false, err
	}
	if ddl == "" {
		return false, errors.New("no events table")
	}
	for _, setting := range strings.Split(mergesStoppedSettings, ", ") {
		if !strings.Contains(ddl, setting) {
			return false, nil
		}
	}
	return true, nil
}
