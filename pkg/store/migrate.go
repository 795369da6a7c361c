package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version`

// Migration is one numbered DDL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in order. Files are named NNNN_name.sql; each holds
// one statement.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("failed to list migrations: %w", err)
	}
	out := make([]Migration, 0, len(entries))
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("failed to read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Migrate applies every migration not yet recorded in schema_migrations, in order. Each statement
// is written to be safe to run again (IF NOT EXISTS and the like), so a crash between a migration
// and its record only means it runs once more.
func (s *Store) Migrate(ctx context.Context) error {
	if err := s.db.Exec(ctx, migrationsTable, nil); err != nil {
		return fmt.Errorf("failed to create schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := s.db.Query(ctx, "SELECT version FROM schema_migrations", nil)
	if err != nil {
		return fmt.Errorf("failed to read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			_ = rows.Close()
			return fmt.Errorf("failed to read schema_migrations: %w", err)
		}
		applied[int(v)] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("failed to read schema_migrations: %w", err)
	}
	ms, err := Migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		if err := s.db.Exec(ctx, m.SQL, nil); err != nil {
			return fmt.Errorf("failed to apply migration %s: %w", m.Name, err)
		}
		if err := s.db.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ({v:UInt32})",
			Params{"v": strconv.Itoa(m.Version)}); err != nil {
			return fmt.Errorf("failed to record migration %s: %w", m.Name, err)
		}
	}
	return nil
}
