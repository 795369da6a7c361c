// Package store is Logbook's ClickHouse layer: the events table's versioned DDL, the INSERT the
// writer runs, and the queries the query API runs. It speaks to ClickHouse through DB, which has two
// implementations running the same SQL text: the embedded engine (chDB, in-process; tests and the
// single-process mode) and clickhouse-go/v2 (a ClickHouse server or cluster in production).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// Params are server-side query parameters: each {name:Type} placeholder in the SQL gets the value
// with that name. Values never become SQL text. Both backends read a value in ClickHouse's
// "escaped" text format, where a backslash starts an escape: pass strings through Text.
type Params map[string]string

var textEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)

// Text renders a String parameter value in the escaped format, so it arrives verbatim.
func Text(s string) string { return textEscaper.Replace(s) }

var quotedEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\t", `\t`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)

// Array renders an Array(String) parameter value: ['a', 'b'] with each element quoted and escaped.
func Array(values []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("'" + quotedEscaper.Replace(v) + "'")
	}
	b.WriteByte(']')
	return b.String()
}

// Rows iterates over a query's result; Scan takes one pointer per selected column.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// DB runs SQL text against ClickHouse. Implementations are safe for concurrent use.
type DB interface {
	// Exec runs a statement that returns no rows.
	Exec(ctx context.Context, query string, params Params) error
	// Query runs a SELECT and holds its result.
	Query(ctx context.Context, query string, params Params) (Rows, error)
	// Each runs a SELECT and streams its result: for every row it scans into dest and calls fn.
	// Memory does not grow with the number of rows. An error from fn stops the query.
	Each(ctx context.Context, query string, params Params, dest []any, fn func() error) error
	// Insert runs "INSERT INTO table (columns)" with the given settings and rows, one value per
	// column: string, uint32, time.Time, []string or map[string]string.
	Insert(ctx context.Context, table string, columns []string, settings map[string]string, rows [][]any) error
	// Close releases the connection.
	Close() error
}

// Store reads and writes audit events. Safe for concurrent use.
type Store struct {
	db DB
	// keepRows, shared by every Store decorating the same DB, is set by StopMerges (tests only).
	keepRows *atomic.Bool
	limits   ReadLimits
}

// New returns a Store on db whose reads run with DefaultReadLimits. Call Migrate before use.
func New(db DB) *Store {
	return &Store{db: db, keepRows: new(atomic.Bool), limits: DefaultReadLimits()}
}

// Close closes the underlying DB.
func (s *Store) Close() error { return s.db.Close() }

var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9:._-]{1,128}$`)

// ErrBadToken is returned for a dedup token outside [A-Za-z0-9:._-]{1,128}.
var ErrBadToken = errors.New("bad insert deduplication token")

var eventColumns = []string{
	"organization_id", "occurred_at", "id", "received_at", "retention_days", "action", "version",
	"actor_id", "actor_type", "actor_name", "target_ids", "target_types", "location", "user_agent",
	"metadata", "search_text", "actor_metadata_json", "targets_json", "metadata_json",
}

// InsertSettings are the settings of every events INSERT, explicit so nothing rests on a server
// default: synchronous (no async insert buffer), deduplicated by the batch's token, and at most
// MaxPartitionsPerInsert partitions per INSERT block (the writer groups rows so that no INSERT
// needs more).
func InsertSettings(token string) map[string]string {
	return map[string]string{
		"async_insert":                             "0",
		"insert_deduplicate":                       "1",
		"insert_deduplication_token":               token,
		"max_insert_block_size":                    "1048576",
		"max_partitions_per_insert_block":          strconv.Itoa(MaxPartitionsPerInsert),
		"throw_on_max_partitions_per_insert_block": "1",
	}
}

// Retention tells the writer how many days an organization's events are kept (0: forever).
type Retention func(org string) uint16

// Insert stores recs in one INSERT deduplicated by token: inserting the same records with the same
// token again stores nothing new. token must be derived from the batch's identity (its stream
// sequence range), never random. Each row is stamped with its organization's retention.
func (s *Store) Insert(ctx context.Context, token string, recs []*event.Record) error {
	return s.InsertWithRetention(ctx, token, recs, func(string) uint16 { return 0 })
}

// InsertWithRetention is Insert with each organization's retention from days.
func (s *Store) InsertWithRetention(ctx context.Context, token string, recs []*event.Record, days Retention) error {
	if !tokenPattern.MatchString(token) {
		return fmt.Errorf("%w: %q", ErrBadToken, token)
	}
	rows := make([][]any, len(recs))
	for i, r := range recs {
		row, err := eventRow(r, days(r.OrganizationID))
		if err != nil {
			return err
		}
		rows[i] = row
	}
	settings := InsertSettings(token)
	if s.keepRows.Load() {
		settings["optimize_on_insert"] = "0" // StopMerges: rows with the same id stay two rows
	}
	if err := s.db.Insert(ctx, "events", eventColumns, settings, rows); err != nil {
		return fmt.Errorf("failed to insert %d events (token %s): %w", len(recs), token, err)
	}
	return nil
}

func eventRow(r *event.Record, retentionDays uint16) ([]any, error) {
	actorMeta, err := objectJSON(r.Event.Actor.Metadata)
	if err != nil {
		return nil, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	meta, err := objectJSON(r.Event.Metadata)
	if err != nil {
		return nil, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	targets := r.Event.Targets
	if targets == nil {
		targets = []event.Entity{}
	}
	targetsJSON, err := json.Marshal(targets)
	if err != nil {
		return nil, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	ids := make([]string, len(r.Event.Targets))
	types := make([]string, len(r.Event.Targets))
	for i, t := range r.Event.Targets {
		ids[i], types[i] = t.ID, t.Type
	}
	return []any{
		r.OrganizationID, r.Event.OccurredAt.UTC(), r.ID, r.ReceivedAt.UTC(), retentionDays, r.Event.Action,
		uint32(r.Event.Version), r.Event.Actor.ID, r.Event.Actor.Type, r.Event.Actor.Name, ids, types,
		r.Event.Context.Location, r.Event.Context.UserAgent, metadataText(r.Event.Metadata), searchText(&r.Event),
		actorMeta, string(targetsJSON), meta,
	}, nil
}

// Event is a stored event. The metadata objects and the targets are the JSON they were accepted
// as (compact, keys sorted); an absent metadata object is "".
type Event struct {
	ID             string
	OrganizationID string
	OccurredAt     time.Time
	ReceivedAt     time.Time
	Action         string
	Version        int
	ActorID        string
	ActorType      string
	ActorName      string
	ActorMetadata  string
	Targets        string
	Location       string
	UserAgent      string
	Metadata       string
}

// JSON renders the event as the API shows it: the WorkOS event object (action, occurred_at,
// version, actor, targets, context, metadata), built from the stored columns without parsing them.
func (e *Event) JSON() []byte {
	b := make([]byte, 0, 256+len(e.ActorMetadata)+len(e.Targets)+len(e.Metadata))
	b = append(b, `{"action":`...)
	b = appendString(b, e.Action)
	b = append(b, `,"occurred_at":`...)
	b = appendString(b, event.FormatTime(e.OccurredAt))
	if e.Version > 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, int64(e.Version), 10)
	}
	b = append(b, `,"actor":{"id":`...)
	b = appendString(b, e.ActorID)
	b = append(b, `,"type":`...)
	b = appendString(b, e.ActorType)
	if e.ActorName != "" {
		b = append(b, `,"name":`...)
		b = appendString(b, e.ActorName)
	}
	if e.ActorMetadata != "" {
		b = append(b, `,"metadata":`...)
		b = append(b, e.ActorMetadata...)
	}
	b = append(b, `},"targets":`...)
	if e.Targets == "" {
		b = append(b, `[]`...)
	} else {
		b = append(b, e.Targets...)
	}
	b = append(b, `,"context":{"location":`...)
	b = appendString(b, e.Location)
	if e.UserAgent != "" {
		b = append(b, `,"user_agent":`...)
		b = appendString(b, e.UserAgent)
	}
	b = append(b, '}')
	if e.Metadata != "" {
		b = append(b, `,"metadata":`...)
		b = append(b, e.Metadata...)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}
