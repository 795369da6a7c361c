package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Position is a place in an organization's event order, which is (occurred_at, id).
type Position struct {
	OccurredAt time.Time
	ID         string
}

// The list query is assembled only from these fixed fragments; every value is a parameter.
const (
	listSelect = `SELECT id, organization_id, toUnixTimestamp64Milli(occurred_at), toUnixTimestamp64Milli(received_at), event
FROM events
WHERE organization_id = {org:String}`
	listOlder = `
  AND occurred_at <= fromUnixTimestamp64Milli({at:Int64}, 'UTC')
  AND (occurred_at < fromUnixTimestamp64Milli({at:Int64}, 'UTC') OR id < {id:String})`
	listNewer = `
  AND occurred_at >= fromUnixTimestamp64Milli({at:Int64}, 'UTC')
  AND (occurred_at > fromUnixTimestamp64Milli({at:Int64}, 'UTC') OR id > {id:String})`
	listNewestFirst = `
ORDER BY toStartOfHour(occurred_at) DESC, occurred_at DESC, id DESC
LIMIT {limit:UInt32}`
	listOldestFirst = `
ORDER BY toStartOfHour(occurred_at) ASC, occurred_at ASC, id ASC
LIMIT {limit:UInt32}`
)

// MaxPage is the largest page Page returns.
const MaxPage = 1001

// Page returns up to limit events of org, strictly beyond from (nil: from the newest or the oldest
// end), walking toward older events when older is true and toward newer ones otherwise, in that
// walking order.
func (s *Store) Page(ctx context.Context, org string, older bool, from *Position, limit int) ([]Event, error) {
	if limit < 1 || limit > MaxPage {
		return nil, fmt.Errorf("page limit %d out of range", limit)
	}
	q := listSelect
	p := Params{"org": Text(org), "limit": strconv.Itoa(limit)}
	if from != nil {
		if older {
			q += listOlder
		} else {
			q += listNewer
		}
		p["at"] = strconv.FormatInt(from.OccurredAt.UnixMilli(), 10)
		p["id"] = Text(from.ID)
	}
	if older {
		q += listNewestFirst
	} else {
		q += listOldestFirst
	}
	rows, err := s.db.Query(ctx, q, p)
	if err != nil {
		return nil, fmt.Errorf("failed to list events: %w", err)
	}
	var out []Event
	for rows.Next() {
		var e Event
		var occurred, received int64
		var raw string
		if err := rows.Scan(&e.ID, &e.OrganizationID, &occurred, &received, &raw); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read events: %w", err)
		}
		e.OccurredAt, e.ReceivedAt, e.Event = time.UnixMilli(occurred).UTC(), time.UnixMilli(received).UTC(), []byte(raw)
		out = append(out, e)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read events: %w", err)
	}
	return out, nil
}

// Count returns how many rows org has stored and how many distinct event ids they hold; the two
// differ only if a duplicate escaped dedup (and has not been merged away yet).
func (s *Store) Count(ctx context.Context, org string) (total, distinct uint64, err error) {
	rows, err := s.db.Query(ctx, `SELECT count(), uniqExact(id) FROM events WHERE organization_id = {org:String}`, Params{"org": Text(org)})
	if err != nil {
		return 0, 0, fmt.Errorf("failed to count events: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&total, &distinct); err != nil {
			return 0, 0, fmt.Errorf("failed to count events: %w", err)
		}
	}
	return total, distinct, rows.Err()
}
