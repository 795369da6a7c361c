package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Position is a place in an organization's event order, which is (occurred_at, id).
type Position struct {
	OccurredAt time.Time
	ID         string
}

// Filter selects an organization's events. Empty fields do not filter. Within a field the values
// are alternatives (OR); fields combine with AND.
type Filter struct {
	// Org is required: no query is ever built without it.
	Org string
	// Actions match exactly, or by prefix when a value ends in "*" ("user.*").
	Actions     []string
	ActorIDs    []string
	ActorNames  []string
	ActorTypes  []string
	TargetIDs   []string
	TargetTypes []string
	// Start (inclusive) and End (exclusive) bound occurred_at; zero means unbounded.
	Start, End time.Time
	// Text matches events whose names, ids, context or metadata values contain it, ignoring case.
	Text string
	// RetentionDays is the organization's current retention (0: none). Events older than that are
	// never returned, whatever retention their row was stamped with when it was written.
	RetentionDays uint16
}

// ErrNoOrg is returned for a Filter without an organization.
var ErrNoOrg = errors.New("an organization is required")

// where renders f as a WHERE clause from fixed fragments; every value becomes a parameter. Rows
// past their retention are never returned.
func (f *Filter) where(p Params) (string, error) {
	if f.Org == "" {
		return "", ErrNoOrg
	}
	p["org"] = Text(f.Org)
	var b strings.Builder
	b.WriteString("organization_id = {org:String}")
	b.WriteString("\n  AND (retention_days = 0 OR occurred_at >= now64(3) - toIntervalDay(retention_days))")
	if f.RetentionDays > 0 {
		p["retention"] = strconv.Itoa(int(f.RetentionDays))
		b.WriteString("\n  AND occurred_at >= now64(3) - toIntervalDay({retention:UInt16})")
	}
	if len(f.Actions) > 0 {
		var exact, alts []string
		for _, a := range f.Actions {
			if prefix, ok := strings.CutSuffix(a, "*"); ok {
				name := "action_prefix_" + strconv.Itoa(len(alts))
				p[name] = Text(prefix)
				alts = append(alts, "startsWith(action, {"+name+":String})")
			} else {
				exact = append(exact, a)
			}
		}
		if len(exact) > 0 {
			p["actions"] = Array(exact)
			alts = append(alts, "action IN {actions:Array(String)}")
		}
		b.WriteString("\n  AND (" + strings.Join(alts, " OR ") + ")")
	}
	in := func(values []string, name, clause string) {
		if len(values) > 0 {
			p[name] = Array(values)
			b.WriteString("\n  AND " + clause)
		}
	}
	in(f.ActorIDs, "actor_ids", "actor_id IN {actor_ids:Array(String)}")
	in(f.ActorNames, "actor_names", "actor_name IN {actor_names:Array(String)}")
	in(f.ActorTypes, "actor_types", "actor_type IN {actor_types:Array(String)}")
	in(f.TargetIDs, "target_ids", "hasAny(target_ids, {target_ids:Array(String)})")
	in(f.TargetTypes, "target_types", "hasAny(target_types, {target_types:Array(String)})")
	if !f.Start.IsZero() {
		p["start"] = strconv.FormatInt(f.Start.UnixMilli(), 10)
		b.WriteString("\n  AND occurred_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')")
	}
	if !f.End.IsZero() {
		p["end"] = strconv.FormatInt(f.End.UnixMilli(), 10)
		b.WriteString("\n  AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')")
	}
	if f.Text != "" {
		p["text"] = Text("%" + likeEscaper.Replace(strings.ToLower(f.Text)) + "%")
		b.WriteString("\n  AND search_text LIKE {text:String}")
	}
	return b.String(), nil
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

const (
	eventSelect = `SELECT id, organization_id, toUnixTimestamp64Milli(occurred_at), toUnixTimestamp64Milli(received_at),
  action, version, actor_id, actor_type, actor_name, actor_metadata_json, targets_json, location, user_agent, metadata_json
FROM events
WHERE `
	afterPosition = `
  AND occurred_at <= fromUnixTimestamp64Milli({at:Int64}, 'UTC')
  AND (occurred_at < fromUnixTimestamp64Milli({at:Int64}, 'UTC') OR id < {id:String})`
	beforePosition = `
  AND occurred_at >= fromUnixTimestamp64Milli({at:Int64}, 'UTC')
  AND (occurred_at > fromUnixTimestamp64Milli({at:Int64}, 'UTC') OR id > {id:String})`
	newestFirst = `
ORDER BY toStartOfHour(occurred_at) DESC, occurred_at DESC, id DESC`
	oldestFirst = `
ORDER BY toStartOfHour(occurred_at) ASC, occurred_at ASC, id ASC`
	pageLimit = `
LIMIT {limit:UInt32}`
)

// MaxPage is the largest page Search returns.
const MaxPage = 1001

// searchWindows are how far back from its newest end a newest-first page is looked for first,
// before the rest of the history. Reading in reverse order stops at the limit, but it starts in
// every part of the organization (each month is a partition of its own), and with a filter each
// part's stream reads whole blocks before it has a row to offer: a page of one actor read most of
// the organization. A window bounds occurred_at, so partitions and parts outside it are skipped
// (10M events, 4M in the organization: one actor's newest page 1.97 s → 0.14 s read over 8 days).
// The windows and the rest are disjoint and read in order, so the page is the one a single query
// over everything returns. Which of them are read is nextWindow's choice.
var searchWindows = []time.Duration{24 * time.Hour, 8 * 24 * time.Hour, 64 * 24 * time.Hour}

// searchEvidence is how far back a newest-first page must have read before a filter that found
// (almost) nothing there is judged sparse and the rest is read in one statement: one empty day
// says little about an actor who acts every other day.
const searchEvidence = 8 * 24 * time.Hour

// nextWindow returns how far back from the page's newest end the next statement of a newest-first
// page reads (0: all the rest), when the statements so far read back to covered (0: none yet) and
// found rows of the limit. The first statement reads the first window; each next one the first
// window that the rate seen so far (found per covered) predicts to fill the page, or, when none
// does, the rest: a sparse filter does not pay a statement per window for a few rows each (issue 13:
// a rare target id's page was four statements). Before searchEvidence was read, it is the next
// window rather than the rest.
func nextWindow(covered time.Duration, found, limit int) time.Duration {
	var next time.Duration // the first window beyond covered
	for _, w := range searchWindows {
		if w <= covered {
			continue
		}
		if covered == 0 || float64(found)*float64(w-covered) >= float64(limit-found)*float64(covered) {
			return w
		}
		if next == 0 {
			next = w
		}
	}
	if covered < searchEvidence {
		return next
	}
	return 0
}

const (
	windowFrom = `
  AND occurred_at >= fromUnixTimestamp64Milli({window_from:Int64}, 'UTC')`
	windowTo = `
  AND occurred_at < fromUnixTimestamp64Milli({window_to:Int64}, 'UTC')`
)

// Search returns up to limit of f's events strictly beyond from (nil: from the newest or the
// oldest end), walking toward older events when older is true and toward newer ones otherwise, in
// that walking order. Toward older events it reads the searchWindows first.
func (s *Store) Search(ctx context.Context, f Filter, older bool, from *Position, limit int) ([]Event, error) {
	if limit < 1 || limit > MaxPage {
		return nil, fmt.Errorf("page limit %d out of range", limit)
	}
	p := Params{}
	where, err := f.where(p)
	if err != nil {
		return nil, err
	}
	q := eventSelect + where
	if from != nil {
		if older {
			q += afterPosition
		} else {
			q += beforePosition
		}
		p["at"] = strconv.FormatInt(from.OccurredAt.UnixMilli(), 10)
		p["id"] = Text(from.ID)
	}
	if f.Text != "" {
		ctx = AsScan(ctx) // free text reads every row of the range: a scan
	}
	tail := oldestFirst + pageLimit + s.limits.Search.Clause()
	if older {
		tail = newestFirst + pageLimit + s.limits.Search.Clause()
	}
	if !older {
		p["limit"] = strconv.Itoa(limit)
		return s.events(ctx, q+tail, p, s.limits.Search)
	}
	newest := time.Now()
	if from != nil {
		newest = from.OccurredAt
	} else if !f.End.IsZero() {
		newest = f.End
	}
	var out []Event
	var to time.Time // the previous window's start; zero: none yet
	for w := nextWindow(0, 0, limit); ; w = nextWindow(newest.Sub(to), len(out), limit) {
		wq, wp := q, Params{}
		for k, v := range p {
			wp[k] = v
		}
		if !to.IsZero() {
			wq += windowTo
			wp["window_to"] = strconv.FormatInt(to.UnixMilli(), 10)
		}
		last := w == 0 || (!f.Start.IsZero() && !newest.Add(-w).After(f.Start))
		if !last {
			to = newest.Add(-w)
			wq += windowFrom
			wp["window_from"] = strconv.FormatInt(to.UnixMilli(), 10)
		}
		wp["limit"] = strconv.Itoa(limit - len(out))
		evs, err := s.events(ctx, wq+tail, wp, s.limits.Search)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		if last || len(out) == limit {
			break
		}
	}
	return out, nil
}

// Page is Search with only the organization as filter.
func (s *Store) Page(ctx context.Context, org string, older bool, from *Position, limit int) ([]Event, error) {
	return s.Search(ctx, Filter{Org: org}, older, from, limit)
}

// ErrNotFound is returned by Get for an event the organization does not have.
var ErrNotFound = errors.New("event not found")

// Get returns one of org's events by id.
func (s *Store) Get(ctx context.Context, org, id string) (*Event, error) {
	return s.GetWithin(ctx, org, id, 0)
}

// GetWithin is Get for an organization whose current retention is retentionDays (0: none): an
// older event is not found.
func (s *Store) GetWithin(ctx context.Context, org, id string, retentionDays uint16) (*Event, error) {
	p := Params{"id": Text(id)}
	f := Filter{Org: org, RetentionDays: retentionDays}
	where, err := f.where(p)
	if err != nil {
		return nil, err
	}
	evs, err := s.events(ctx, eventSelect+where+"\n  AND id = {id:String}\nLIMIT 1"+s.limits.Search.Clause(), p, s.limits.Search)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return &evs[0], nil
}

// ExportPartsPerRead bounds how many table parts one statement of Each reads. A read in
// sorting-key order merges a stream per part it reads, each holding its own read and
// decompression buffers, so one statement over an organization's whole history used memory in
// proportion to the table's parts (issue 13: 2 GiB at 10M events). Each reads in time chunks
// instead, each chunk holding at most this many parts (unless a single hour alone holds more).
const ExportPartsPerRead = 8

// Each calls fn for every event f selects, newest first when desc, streaming: memory grows neither
// with the number of events nor with the number of parts they are stored in. An error from fn
// stops the query and is returned.
//
// It reads in chunks of whole hours (the sorting key's bucket), so the chunks in turn give the
// events in order: a first statement lists, per hour of f's range, the parts that hold the
// organization's rows, and the range is cut into consecutive chunks, each the longest run of hours
// whose rows lie in at most ExportPartsPerRead parts (the first and last chunks reach to the ends
// of f's range, so together they cover all of it). The export limits hold for the whole read:
// max_execution_time for all its statements together, max_memory_usage for each statement, and
// max_rows_to_read for the listing, which reads every row of the range, and for each chunk.
func (s *Store) Each(ctx context.Context, f Filter, desc bool, fn func(*Event) error) error {
	began := time.Now()
	l := s.limits.Export
	cuts, err := s.cuts(ctx, f, l)
	if err != nil {
		return err
	}
	chunks := make([]Filter, 0, len(cuts)+1)
	for i := 0; i <= len(cuts); i++ {
		c := f
		if i > 0 {
			c.Start = cuts[i-1]
		}
		if i < len(cuts) {
			c.End = cuts[i]
		}
		chunks = append(chunks, c)
	}
	if desc {
		slices.Reverse(chunks)
	}
	var e Event
	sc := e.scanner()
	for _, c := range chunks {
		cl := l
		if l.MaxExecutionTime > 0 {
			if cl.MaxExecutionTime -= time.Since(began); cl.MaxExecutionTime <= 0 {
				return &LimitError{Kind: LimitTime, Limits: l, Err: errors.New("the export's statements ran out of time")}
			}
		}
		p := Params{}
		where, err := c.where(p)
		if err != nil {
			return err
		}
		q := eventSelect + where + oldestFirst
		if desc {
			q = eventSelect + where + newestFirst
		}
		var fnErr error
		err = s.db.Each(ctx, q+cl.Clause(), p, sc.dest, func() error {
			sc.finish()
			fnErr = fn(&e)
			return fnErr
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return AsLimitError(err, l)
		}
	}
	return nil
}

// cuts lists the hours of f's range that hold rows of its organization (whatever f's other
// filters) with the parts holding them, and returns where Each's chunks begin after the first,
// oldest first: the start of each hour that would take its chunk past ExportPartsPerRead parts.
func (s *Store) cuts(ctx context.Context, f Filter, l QueryLimits) ([]time.Time, error) {
	p := Params{}
	scope := Filter{Org: f.Org, Start: f.Start, End: f.End, RetentionDays: f.RetentionDays}
	where, err := scope.where(p)
	if err != nil {
		return nil, err
	}
	q := `SELECT toInt64(intDiv(toUnixTimestamp64Milli(occurred_at), 3600000)) AS hour, arrayStringConcat(groupUniqArray(_part), ' ')
FROM events
WHERE ` + where + `
GROUP BY hour
ORDER BY hour` + l.Clause()
	var (
		out   []time.Time
		hour  int64
		names string
		parts = map[string]bool{}
	)
	err = s.db.Each(ctx, q, p, []any{&hour, &names}, func() error {
		hourParts := strings.Fields(names)
		n := len(parts)
		for _, name := range hourParts {
			if !parts[name] {
				n++
			}
		}
		if n > ExportPartsPerRead && len(parts) > 0 {
			out = append(out, time.UnixMilli(hour*3_600_000).UTC())
			clear(parts)
		}
		for _, name := range hourParts {
			parts[name] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to plan the export's reads: %w", AsLimitError(err, l))
	}
	return out, nil
}

// events runs a SELECT of eventSelect's columns with limits l.
func (s *Store) events(ctx context.Context, q string, p Params, l QueryLimits) ([]Event, error) {
	rows, err := s.db.Query(ctx, q, p)
	if err != nil {
		return nil, fmt.Errorf("failed to query events: %w", AsLimitError(err, l))
	}
	var out []Event
	for rows.Next() {
		var e Event
		sc := e.scanner()
		if err := rows.Scan(sc.dest...); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read events: %w", err)
		}
		sc.finish()
		out = append(out, e)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read events: %w", AsLimitError(err, l))
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

// DeleteOlderThan physically deletes org's events that occurred more than days ago and that their
// stamped retention does not already expire (a lightweight DELETE: the rows vanish from reads at
// once and from disk at the next merge). It enforces a shortened retention on rows written under a
// longer one or none; the TTL handles the rest. When nothing matches, nothing is run.
func (s *Store) DeleteOlderThan(ctx context.Context, org string, days uint16) error {
	if org == "" {
		return ErrNoOrg
	}
	if days == 0 {
		return errors.New("delete older than 0 days refused")
	}
	const where = `
WHERE organization_id = {org:String}
  AND occurred_at < now64(3) - toIntervalDay({days:UInt16})
  AND (retention_days = 0 OR retention_days > {days:UInt16})`
	p := Params{"org": Text(org), "days": strconv.Itoa(int(days))}
	rows, err := s.db.Query(ctx, "SELECT count() FROM events"+where, p)
	if err != nil {
		return fmt.Errorf("failed to count expired events of %s: %w", org, err)
	}
	var n uint64
	if rows.Next() {
		err = rows.Scan(&n)
	}
	if err := errors.Join(err, rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("failed to count expired events of %s: %w", org, err)
	}
	if n == 0 {
		return nil
	}
	if err := s.db.Exec(ctx, "DELETE FROM events"+where, p); err != nil {
		return fmt.Errorf("failed to delete events of %s older than %d days: %w", org, days, err)
	}
	return nil
}

// eventScanner scans eventSelect's columns into an Event.
type eventScanner struct {
	e                  *Event
	occurred, received int64
	version            uint32
	dest               []any
}

func (e *Event) scanner() *eventScanner {
	sc := &eventScanner{e: e}
	sc.dest = []any{&e.ID, &e.OrganizationID, &sc.occurred, &sc.received, &e.Action, &sc.version, &e.ActorID,
		&e.ActorType, &e.ActorName, &e.ActorMetadata, &e.Targets, &e.Location, &e.UserAgent, &e.Metadata}
	return sc
}

func (sc *eventScanner) finish() {
	sc.e.OccurredAt = time.UnixMilli(sc.occurred).UTC()
	sc.e.ReceivedAt = time.UnixMilli(sc.received).UTC()
	sc.e.Version = int(sc.version)
}
