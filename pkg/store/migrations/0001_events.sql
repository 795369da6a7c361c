-- Audit events: one row per event, never updated.
--
-- Sort key: organization first (every query is scoped to one), then an hourly bucket and the event
-- time, so an organization's events in a time range are one contiguous, in-order range; the event
-- id last makes the key unique, which lets ReplacingMergeTree collapse any duplicate that slipped
-- past insert dedup (a backstop: the primary dedup is each batch's insert_deduplication_token).
--
-- Retention: each row carries its organization's retention (days, 0 = keep) as of its insert, and
-- the partition key holds it, so every part has one retention class and the TTL drops whole parts
-- (ttl_only_drop_parts). Queries also hide rows past their retention, so what a reader sees is
-- exact even before a part is dropped.
--
-- Hot filter fields are typed columns with skip indexes; search_text (lower-cased names, context
-- and metadata values) serves free-text search through an n-gram index. Metadata objects and the
-- targets are also kept as the JSON they were accepted as (actor_metadata_json, targets_json,
-- metadata_json), so the API and exports return them verbatim without any JSON parsing.
CREATE TABLE IF NOT EXISTS events
(
    organization_id String CODEC(ZSTD(1)),
    occurred_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    id String CODEC(ZSTD(1)),
    received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    retention_days UInt16,
    action LowCardinality(String),
    version UInt32,
    actor_id String CODEC(ZSTD(1)),
    actor_type LowCardinality(String),
    actor_name String CODEC(ZSTD(1)),
    target_ids Array(String) CODEC(ZSTD(1)),
    target_types Array(LowCardinality(String)),
    location String CODEC(ZSTD(1)),
    user_agent String CODEC(ZSTD(1)),
    metadata Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    search_text String CODEC(ZSTD(1)),
    actor_metadata_json String CODEC(ZSTD(1)),
    targets_json String CODEC(ZSTD(1)),
    metadata_json String CODEC(ZSTD(1)),
    INDEX idx_id id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_action action TYPE set(256) GRANULARITY 1,
    INDEX idx_actor_id actor_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_actor_name actor_name TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_target_ids target_ids TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_target_types target_types TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_metadata_keys mapKeys(metadata) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_metadata_values mapValues(metadata) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_search_text search_text TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY (toYYYYMM(occurred_at), retention_days)
ORDER BY (organization_id, toStartOfHour(occurred_at), occurred_at, id)
TTL toDateTime(occurred_at) + toIntervalDay(if(retention_days = 0, 18250, retention_days))
SETTINGS
    index_granularity = 8192,
    ttl_only_drop_parts = 1,
    non_replicated_deduplication_window = 10000,
    fsync_after_insert = 1,
    fsync_part_directory = 1
