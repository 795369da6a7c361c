package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/event"
)

// dataErrorCodes are ClickHouse error codes that say the data itself is bad: retrying the same
// rows can never succeed.
var dataErrorCodes = map[int]bool{
	6:   true, // CANNOT_PARSE_TEXT
	26:  true, // CANNOT_PARSE_QUOTED_STRING
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
}

var codePattern = regexp.MustCompile(`Code: (\d+)\.`)

// IsDataError reports whether err is ClickHouse refusing the rows themselves (a parse or type
// error), as opposed to ClickHouse being unavailable or slow.
func IsDataError(err error) bool {
	code, ok := errorCode(err)
	return ok && dataErrorCodes[code]
}

// errorCode returns the ClickHouse error code in err, from either backend.
func errorCode(err error) (int, bool) {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return int(ex.Code), true
	}
	var ce *chdb.Error
	if errors.As(err, &ce) {
		if m := codePattern.FindStringSubmatch(ce.Message); m != nil {
			code, _ := strconv.Atoi(m[1])
			return code, true
		}
	}
	return 0, false
}

// StoredIDs returns which of recs' event ids are already stored (for their organizations).
func (s *Store) StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error) {
	orgs, ids := map[string]bool{}, make([]string, 0, len(recs))
	for _, r := range recs {
		orgs[r.OrganizationID] = true
		ids = append(ids, r.ID)
	}
	orgList := make([]string, 0, len(orgs))
	for o := range orgs {
		orgList = append(orgList, o)
	}
	rows, err := s.db.Query(ctx, `SELECT DISTINCT id FROM events
WHERE organization_id IN {orgs:Array(String)} AND id IN {ids:Array(String)}`,
		Params{"orgs": Array(orgList), "ids": Array(ids)})
	if err != nil {
		return nil, fmt.Errorf("failed to look up stored ids: %w", err)
	}
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to look up stored ids: %w", err)
		}
		out[id] = true
	}
	return out, errors.Join(rows.Err(), rows.Close())
}

// EachID streams, for org's events received at or after since, each event id with how many rows
// hold it (more than one is a duplicate that escaped dedup).
func (s *Store) EachID(ctx context.Context, org string, since time.Time, fn func(id string, rows uint64) error) error {
	var id string
	var n uint64
	return s.db.Each(ctx, `SELECT id, count() FROM events
WHERE organization_id = {org:String} AND received_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
GROUP BY id`, Params{"org": Text(org), "since": strconv.FormatInt(since.UnixMilli(), 10)},
		[]any{&id, &n}, func() error { return fn(id, n) })
}

// CreateTableQuery returns the engine's own CREATE statement for table, as it stands now.
func (s *Store) CreateTableQuery(ctx context.Context, table string) (string, error) {
	rows, err := s.db.Query(ctx, `SELECT create_table_query FROM system.tables
WHERE database = currentDatabase() AND name = {table:String}`, Params{"table": Text(table)})
	if err != nil {
		return "", fmt.Errorf("failed to read table %s: %w", table, err)
	}
	defer rows.Close()
	var q string
	if rows.Next() {
		if err := rows.Scan(&q); err != nil {
			return "", err
		}
	}
	return q, rows.Err()
}
