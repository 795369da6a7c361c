package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/failpoint"
)

// Embedded is the DB implementation on the ClickHouse engine running in this process (chDB).
// Only one process may open a data directory, and only one Embedded may be open per process.
type Embedded struct {
	conn *chdb.Conn
}

// OpenEmbedded loads libchdb.so from libPath (chdb.DefaultLibPath() when empty) and opens the
// engine on dataDir.
func OpenEmbedded(libPath, dataDir string) (*Embedded, error) {
	if libPath == "" {
		libPath = chdb.DefaultLibPath()
	}
	conn, err := chdb.Open(libPath, dataDir)
	if err != nil {
		return nil, err
	}
	return &Embedded{conn: conn}, nil
}

// Exec implements DB.
func (e *Embedded) Exec(ctx context.Context, query string, params Params) error {
	_, err := e.conn.Query(ctx, query, "TabSeparated", params)
	return err
}

// Query implements DB. The whole result is read at once (TabSeparated) and scanned from memory.
func (e *Embedded) Query(ctx context.Context, query string, params Params) (Rows, error) {
	out, err := e.conn.Query(ctx, query, "TabSeparated", params)
	if err != nil {
		return nil, err
	}
	return &tsvRows{data: out}, nil
}

// Insert implements DB with one INSERT ... FORMAT JSONCompactEachRow statement.
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
	b.WriteString(" FORMAT JSONCompactEachRow\n")
	enc := json.NewEncoder(&b)
	vals := make([]any, 0, len(columns))
	poison := failpoint.Value("store-poison-action") // fault tests: make the engine refuse such rows
	for _, r := range rows {
		vals = vals[:0]
		for _, v := range r {
			if t, ok := v.(time.Time); ok {
				v = t.UTC().Format("2006-01-02 15:04:05.000")
			}
			vals = append(vals, v)
		}
		if poison != "" && slices.Contains(r, any(poison)) {
			vals[slices.Index(columns, "occurred_at")] = "not a time"
		}
		if err := enc.Encode(vals); err != nil {
			return fmt.Errorf("failed to encode row: %w", err)
		}
	}
	_, err := e.conn.Query(ctx, b.String(), "TabSeparated", nil)
	return err
}

// Close implements DB.
func (e *Embedded) Close() error { return e.conn.Close() }

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
