package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/event"
)

// Refusal is how the writer must answer a failed INSERT.
type Refusal int

const (
	// Unavailable: ClickHouse is down, slow or busy, or the cause is unknown. The same INSERT is
	// retried, with backoff, for as long as it takes.
	Unavailable Refusal = iota
	// RefusedData: the rows themselves are bad (a parse or type error). Retrying them can never
	// succeed; the batch is split until the refused row stands alone, and that row is rejected.
	RefusedData
	// RefusedTooLarge: the INSERT as a whole exceeds a limit (partitions per INSERT block, memory,
	// size). Retrying it can never succeed; smaller INSERTs of the same rows can, so it is split.
	RefusedTooLarge
)

func (r Refusal) String() string {
	switch r {
	case RefusedData:
		return "refused as data"
	case RefusedTooLarge:
		return "refused as too large"
	}
	return "unavailable"
}

// dataErrorCodes are ClickHouse error codes that say the data itself is bad.
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

// tooLargeCodes are ClickHouse error codes that say the INSERT as a whole is too big to run.
var tooLargeCodes = map[int]bool{
	173: true, // CANNOT_ALLOCATE_MEMORY
	241: true, // MEMORY_LIMIT_EXCEEDED
	307: true, // TOO_MANY_BYTES
	396: true, // TOO_MANY_ROWS_OR_BYTES
}

// codeTooManyParts is TOO_MANY_PARTS. ClickHouse uses it for two different things: an INSERT
// block spanning more partitions than max_partitions_per_insert_block (deterministic: split it),
// and a table whose merges lag behind its inserts (transient: retry later). The message tells.
const codeTooManyParts = 252

var (
	codePattern           = regexp.MustCompile(`Code: (\d+)\.`)
	tooManyPartitionsText = "partitions for single INSERT block"
)

// Classify says how the writer must answer err from an INSERT, by ClickHouse's error code: from
// clickhouse-go's exception (a server) or from the embedded engine's message text ("Code: 252.
// DB::Exception: ..."), so both backends are answered alike.
func Classify(err error) Refusal {
	if err == nil {
		return Unavailable
	}
	var code int
	var msg string
	var ex *clickhouse.Exception
	var ce *chdb.Error
	switch {
	case errors.As(err, &ex):
		code, msg = int(ex.Code), ex.Message
	case errors.As(err, &ce):
		m := codePattern.FindStringSubmatch(ce.Message)
		if m == nil {
			return Unavailable
		}
		code, _ = strconv.Atoi(m[1])
		msg = ce.Message
	default:
		return Unavailable
	}
	switch {
	case dataErrorCodes[code]:
		return RefusedData
	case tooLargeCodes[code]:
		return RefusedTooLarge
	case code == codeTooManyParts && strings.Contains(msg, tooManyPartitionsText):
		return RefusedTooLarge
	}
	return Unavailable
}

// IsDataError reports whether err is ClickHouse refusing the rows themselves (a parse or type
// error), as opposed to ClickHouse being unavailable or slow.
func IsDataError(err error) bool { return Classify(err) == RefusedData }

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

// IDFilter selects stored events by organization (empty: every organization) and by receive time,
// From inclusive, To exclusive (zero: no end).
type IDFilter struct {
	Org      string
	From, To time.Time
}

// EachID streams every stored event id that f selects, with its organization and how many rows
// hold it: more than one is a duplicate that escaped insert dedup. This is the count a duplicate
// check must use, and it sees every duplicate only while no merge has collapsed it (StopMerges):
// ReplacingMergeTree keeps one row per id at some later merge.
func (s *Store) EachID(ctx context.Context, f IDFilter, fn func(org, id string, rows uint64) error) error {
	where := []string{"received_at >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')"}
	p := Params{"from": strconv.FormatInt(f.From.UnixMilli(), 10)}
	if f.Org != "" {
		where = append(where, "organization_id = {org:String}")
		p["org"] = Text(f.Org)
	}
	if !f.To.IsZero() {
		where = append(where, "received_at < fromUnixTimestamp64Milli({to:Int64}, 'UTC')")
		p["to"] = strconv.FormatInt(f.To.UnixMilli(), 10)
	}
	var org, id string
	var n uint64
	return s.db.Each(ctx, "SELECT organization_id, id, count() FROM events WHERE "+strings.Join(where, " AND ")+
		" GROUP BY organization_id, id", p, []any{&org, &id, &n}, func() error { return fn(org, id, n) })
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
