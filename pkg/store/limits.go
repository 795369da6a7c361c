package store

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/config"
)

// QueryLimits bound one read statement through ClickHouse's own settings, written into the SQL
// text (a SETTINGS clause), so the embedded engine and a ClickHouse server apply the same limits.
// A statement past one of them stops with an error that reads as a *LimitError. Zero turns a
// limit off.
type QueryLimits struct {
	// MaxExecutionTime is max_execution_time: the statement stops once it has run this long.
	MaxExecutionTime time.Duration
	// MaxMemoryUsage is max_memory_usage, in bytes, for the statement.
	MaxMemoryUsage int64
	// MaxRowsToRead is max_rows_to_read: the rows the statement may read from the table (rows
	// ruled out by the primary key and skip indexes do not count).
	MaxRowsToRead int64
}

// ReadLimits are the limits of the query API's statements: a search or a single event, and an
// export (which streams a whole range, so it may run longer).
type ReadLimits struct {
	Search QueryLimits
	Export QueryLimits
}

// DefaultReadLimits: a search stops after 30 s or 1 GiB, an export after 1 hour or 2 GiB; rows
// read are not limited (the time limit bounds them).
func DefaultReadLimits() ReadLimits {
	return ReadLimits{
		Search: QueryLimits{MaxExecutionTime: 30 * time.Second, MaxMemoryUsage: 1 << 30},
		Export: QueryLimits{MaxExecutionTime: time.Hour, MaxMemoryUsage: 2 << 30},
	}
}

// ReadLimitsFromEnv reads LOGBOOK_SEARCH_MAX_EXECUTION_TIME, LOGBOOK_SEARCH_MAX_MEMORY_USAGE,
// LOGBOOK_SEARCH_MAX_ROWS_TO_READ and the same three LOGBOOK_EXPORT_… variables over
// DefaultReadLimits (0 turns a limit off).
func ReadLimitsFromEnv(env *config.Env) ReadLimits {
	l := DefaultReadLimits()
	read := func(prefix string, q *QueryLimits) {
		q.MaxExecutionTime = env.DurationOrZero(prefix+"_MAX_EXECUTION_TIME", q.MaxExecutionTime)
		q.MaxMemoryUsage = env.Int(prefix+"_MAX_MEMORY_USAGE", q.MaxMemoryUsage, 0, 1<<50)
		q.MaxRowsToRead = env.Int(prefix+"_MAX_ROWS_TO_READ", q.MaxRowsToRead, 0, 1<<62)
	}
	read("LOGBOOK_SEARCH", &l.Search)
	read("LOGBOOK_EXPORT", &l.Export)
	return l
}

// Clause renders the limits as a SETTINGS clause to end a SELECT with ("" when none is set).
// Overflow modes are spelt out as "throw", so a limit never silently truncates a result.
func (q QueryLimits) Clause() string {
	var s []string
	if q.MaxExecutionTime > 0 {
		s = append(s, "max_execution_time = "+strconv.FormatFloat(q.MaxExecutionTime.Seconds(), 'f', -1, 64),
			"timeout_overflow_mode = 'throw'")
	}
	if q.MaxMemoryUsage > 0 {
		s = append(s, "max_memory_usage = "+strconv.FormatInt(q.MaxMemoryUsage, 10))
	}
	if q.MaxRowsToRead > 0 {
		s = append(s, "max_rows_to_read = "+strconv.FormatInt(q.MaxRowsToRead, 10), "read_overflow_mode = 'throw'")
	}
	if len(s) == 0 {
		return ""
	}
	return "\nSETTINGS " + strings.Join(s, ", ")
}

// Limit kinds of a LimitError.
const (
	LimitTime   = "time"
	LimitMemory = "memory"
	LimitRows   = "rows"
)

// LimitError is a read that ClickHouse stopped because it went past one of its QueryLimits.
type LimitError struct {
	// Kind is LimitTime, LimitMemory or LimitRows.
	Kind string
	// Limits are the limits the statement ran with.
	Limits QueryLimits
	Err    error
}

func (e *LimitError) Error() string {
	return "query stopped by its " + e.Kind + " limit (" + e.Describe() + "): " + e.Err.Error()
}

func (e *LimitError) Unwrap() error { return e.Err }

// Describe says which limit it was, for people: "30s", "1073741824 bytes", "1000000 rows".
func (e *LimitError) Describe() string {
	switch e.Kind {
	case LimitTime:
		return e.Limits.MaxExecutionTime.String()
	case LimitMemory:
		return strconv.FormatInt(e.Limits.MaxMemoryUsage, 10) + " bytes"
	default:
		return strconv.FormatInt(e.Limits.MaxRowsToRead, 10) + " rows"
	}
}

// Setting names the ClickHouse setting of the limit: max_execution_time, max_memory_usage or
// max_rows_to_read.
func (e *LimitError) Setting() string {
	switch e.Kind {
	case LimitTime:
		return "max_execution_time"
	case LimitMemory:
		return "max_memory_usage"
	default:
		return "max_rows_to_read"
	}
}

// limitCodes are the ClickHouse error codes of the limits QueryLimits sets.
var limitCodes = map[int]string{
	158: LimitRows,   // TOO_MANY_ROWS
	159: LimitTime,   // TIMEOUT_EXCEEDED
	160: LimitTime,   // TOO_SLOW
	241: LimitMemory, // MEMORY_LIMIT_EXCEEDED
	307: LimitRows,   // TOO_MANY_BYTES
	396: LimitRows,   // TOO_MANY_ROWS_OR_BYTES
}

// AsLimitError returns err as a *LimitError when ClickHouse stopped the statement for one of l's
// limits, else err unchanged: for statements run with l.Clause().
func AsLimitError(err error, l QueryLimits) error {
	if err == nil {
		return nil
	}
	var le *LimitError
	if errors.As(err, &le) {
		return err
	}
	if code, ok := errorCode(err); ok {
		if kind, ok := limitCodes[code]; ok {
			return &LimitError{Kind: kind, Limits: l, Err: err}
		}
	}
	return err
}

// WithLimits returns a Store on the same DB whose searches, single-event reads and exports run
// with l.
func (s *Store) WithLimits(l ReadLimits) *Store {
	return &Store{db: s.db, keepRows: s.keepRows, limits: l}
}

// On returns a Store like s (its limits and test settings) on another view of the same engine,
// such as the embedded engine's priority sessions (Embedded.Priority).
func (s *Store) On(db DB) *Store { return &Store{db: db, keepRows: s.keepRows, limits: s.limits} }

// Limits returns the limits the Store's reads run with.
func (s *Store) Limits() ReadLimits { return s.limits }
