package store

import (
	"context"
	"errors"
	"fmt"
)

// Ping runs a trivial query (SELECT 1): a readiness check that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error {
	rows, err := s.db.Query(ctx, "SELECT 1", nil)
	if err != nil {
		return fmt.Errorf("clickhouse is not answering: %w", err)
	}
	var one uint8
	if rows.Next() {
		err = rows.Scan(&one)
	}
	if err := errors.Join(err, rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("clickhouse is not answering: %w", err)
	}
	if one != 1 {
		return errors.New("clickhouse answered SELECT 1 with something else")
	}
	return nil
}

// Decorate returns a Store on wrap(s's DB), sharing the connection: a decorator such as
// storemetrics.New sees every statement. Close either Store, once.
func (s *Store) Decorate(wrap func(DB) DB) *Store {
	return &Store{db: wrap(s.db), keepRows: s.keepRows, limits: s.limits}
}
