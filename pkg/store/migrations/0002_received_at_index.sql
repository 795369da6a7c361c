-- Log streams catch up from ClickHouse in received order (received_at, id): a replay from before
-- what the valid stream holds, or a stream released after a long outage of its destination. Parts
-- are written in roughly received order, so a minmax index lets such a read skip every granule
-- outside the range instead of scanning the organization's whole history.
ALTER TABLE events ADD INDEX IF NOT EXISTS idx_received_at received_at TYPE minmax GRANULARITY 1
