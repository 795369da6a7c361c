-- Audit events. One row per event, never updated.
-- Sort key: organization first (every query is scoped to one), then an hourly bucket and the event
-- time, so an organization's newest events are a contiguous range read in order; the event id last
-- makes the key unique, which lets ReplacingMergeTree collapse any duplicate that slipped past insert
-- dedup (a backstop: the primary dedup is the insert_deduplication_token of each batch).
-- Hot filter fields are typed columns; the event as accepted is kept whole in `event`.
CREATE TABLE IF NOT EXISTS events
(
    organization_id String CODEC(ZSTD(1)),
    occurred_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    id String CODEC(ZSTD(1)),
    received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    action LowCardinality(String),
    version UInt32,
    actor_id String CODEC(ZSTD(1)),
    actor_type LowCardinality(String),
    actor_name String CODEC(ZSTD(1)),
    target_ids Array(String) CODEC(ZSTD(1)),
    target_types Array(LowCardinality(String)),
    location String CODEC(ZSTD(1)),
    metadata Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    event String CODEC(ZSTD(3)),
    INDEX idx_actor_id actor_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_target_ids target_ids TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (organization_id, toStartOfHour(occurred_at), occurred_at, id)
SETTINGS
    index_granularity = 8192,
    non_replicated_deduplication_window = 10000,
    fsync_after_insert = 1,
    fsync_part_directory = 1
