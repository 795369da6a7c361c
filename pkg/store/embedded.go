package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/failpoint"
)

// Embedded is the DB implementation on the ClickHouse engine running in this process (chDB).
// Only one process may open a data directory, and only one Embedded may be open per process.
//
// Statements run on the engine's read sessions (several at once), except INSERTs, which run on
// its priority session so that slow reads never hold them up. Priority gives a DB that runs
// everything on the priority session, for the writer's own reads and for readiness checks.
// Free-text searches (which scan an organization's rows) may hold at most all read sessions but
// one, so reads that the sort key serves (pages, filters, single events) always find a session
// instead of queueing behind scans.
type Embedded struct {
	conn  *chdb.Conn
	scans chan struct{} // a token per scan allowed to run
}

// OpenEmbedded loads libchdb.so from libPath (chdb.DefaultLibPath() when empty) and opens the
// engine on dataDir, with the engine's start arguments args (see EngineMemory.Args; none: the
// engine's defaults).
func OpenEmbedded(libPath, dataDir string, args ...string) (*Embedded, error) {
	if libPath == "" {
		libPath = chdb.DefaultLibPath()
	}
	conn, err := chdb.Open(libPath, dataDir, args...)
	if err != nil {
		return nil, err
	}
	return &Embedded{conn: conn, scans: make(chan struct{}, max(1, chdb.ReadSessions-1))}, nil
}

// scanKey marks a context whose statement scans many rows (a free-text search).
type scanKey struct{}

// asScan marks ctx's statement as a scan, for the embedded engine's read sessions.
func AsScan(ctx context.Context) context.Context { return context.WithValue(ctx, scanKey{}, true) }

// Exec implements DB.
func (e *Embedded) Exec(ctx context.Context, query string, params Params) error {
	_, err := e.conn.Query(ctx, query, "TabSeparated", params)
	return err
}

// Query implements DB. The whole result is read at once (TabSeparated) and scanned from memory.
// A scan (see asScan) first waits for one of its tokens.
func (e *Embedded) Query(ctx context.Context, query string, params Params) (Rows, error) {
	if scan, _ := ctx.Value(scanKey{}).(bool); scan {
		select {
		case e.scans <- struct{}{}:
			defer func() { <-e.scans }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out, err := e.conn.Query(ctx, query, "TabSeparated", params)
	if err != nil {
		return nil, err
	}
	return &tsvRows{data: out}, nil
}

// Insert implements DB with one INSERT ... FORMAT TabSeparated statement (cheaper to encode and
// for the engine to parse than JSON).
func (e *Embedded) Insert(ctx context.Context, table string, columns []string, settings map[string]string, rows [][]any) error {
	var b bytes.Buffer
	b.WriteString(insertHead(table, columns))
	if len(settings) > 0 {
		keys := make([]string, 0, len(settings))
		for k := range settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(" SETTINGS ")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(k + " = " + quote(settings[k]))
		}
	}
	b.WriteString(" FORMAT TabSeparated\n")
	buf := make([]byte, 0, 64<<10)
	poison := failpoint.Value("store-poison-action") // fault tests: make the engine refuse such rows
	occurredAt := slices.Index(columns, "occurred_at")
	for _, r := range rows {
		buf = buf[:0]
		for i, v := range r {
			if i > 0 {
				buf = append(buf, '\t')
			}
			if poison != "" && i == occurredAt && slices.Contains(r, any(poison)) {
				v = "not a time"
			}
			var err error
			if buf, err = appendTSV(buf, v); err != nil {
				return fmt.Errorf("failed to encode column %s: %w", columns[i], err)
			}
		}
		buf = append(buf, '\n')
		b.Write(buf)
	}
	_, err := e.conn.QueryPriority(ctx, b.String(), "TabSeparated", nil)
	return err
}

// Close implements DB.
func (e *Embedded) Close() error { return e.conn.Close() }

// Priority returns a DB on the same engine that runs every statement on the priority session,
// never waiting behind reads on the read sessions: the writer's store (its INSERTs and the reads
// that decide them) and the readiness check use it. Its Each streams on a connection of its own,
// as Embedded's does. Closing it does nothing: close the Embedded.
func (e *Embedded) Priority() DB { return priorityDB{e} }

type priorityDB struct{ e *Embedded }

func (p priorityDB) Exec(ctx context.Context, query string, params Params) error {
	_, err := p.e.conn.QueryPriority(ctx, query, "TabSeparated", params)
	return err
}

func (p priorityDB) Query(ctx context.Context, query string, params Params) (Rows, error) {
	out, err := p.e.conn.QueryPriority(ctx, query, "TabSeparated", params)
	if err != nil {
		return nil, err
	}
	return &tsvRows{data: out}, nil
}

func (p priorityDB) Each(ctx context.Context, query string, params Params, dest []any, fn func() error) error {
	return p.e.Each(ctx, query, params, dest, fn)
}

func (p priorityDB) Insert(ctx context.Context, table string, columns []string, settings map[string]string, rows [][]any) error {
	return p.e.Insert(ctx, table, columns, settings, rows)
}

func (p priorityDB) Close() error { return nil }

// quote renders a setting value as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Each implements DB on the engine's streaming interface: rows are decoded chunk by chunk.
func (e *Embedded) Each(ctx context.Context, query string, params Params, dest []any, fn func() error) error {
	return e.conn.QueryStream(ctx, query, "TabSeparated", params, func(chunk []byte) error {
		r := &tsvRows{data: chunk}
		for r.Next() {
			if err := r.Scan(dest...); err != nil {
				return err
			}
			if err := fn(); err != nil {
				return err
			}
		}
		return r.Err()
	})
}
