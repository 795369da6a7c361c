package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/logbookhq/logbook/pkg/config"
)

// ServerConfig reaches a ClickHouse server or cluster over the native protocol.
type ServerConfig struct {
	// Addr is one or more host:port of the native protocol (default port 9000), comma-separated.
	Addr string
	// Database holds Logbook's tables. Default "default".
	Database string
	Username string
	Password string
}

// Server is the clickhouse-go/v2 implementation of DB.
type Server struct {
	conn driver.Conn
}

// OpenServer connects to ClickHouse and pings it.
func OpenServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	db := cfg.Database
	if db == "" {
		db = "default"
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        strings.Split(cfg.Addr, ","),
		Auth:        clickhouse.Auth{Database: db, Username: cfg.Username, Password: cfg.Password},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open clickhouse %s: %w", cfg.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("failed to reach clickhouse %s: %w", cfg.Addr, err)
	}
	return &Server{conn: conn}, nil
}

func withParams(ctx context.Context, p Params) context.Context {
	if len(p) == 0 {
		return ctx
	}
	return clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters(p)))
}

// Exec implements DB.
func (s *Server) Exec(ctx context.Context, query string, params Params) error {
	return s.conn.Exec(withParams(ctx, params), query)
}

// Query implements DB.
func (s *Server) Query(ctx context.Context, query string, params Params) (Rows, error) {
	return s.conn.Query(withParams(ctx, params), query)
}

// Insert implements DB with one native-protocol batch.
func (s *Server) Insert(ctx context.Context, table string, columns []string, settings map[string]string, rows [][]any) error {
	cs := clickhouse.Settings{}
	for k, v := range settings {
		cs[k] = v
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(cs))
	batch, err := s.conn.PrepareBatch(ctx, insertHead(table, columns))
	if err != nil {
		return err
	}
	for _, r := range rows {
		if err := batch.Append(r...); err != nil {
			_ = batch.Abort()
			return err
		}
	}
	return batch.Send()
}

// Close implements DB.
func (s *Server) Close() error { return s.conn.Close() }

func insertHead(table string, columns []string) string {
	return "INSERT INTO " + table + " (" + strings.Join(columns, ", ") + ")"
}

// ServerFromEnv connects to the ClickHouse server named by LOGBOOK_CLICKHOUSE_ADDR (required,
// host:9000), LOGBOOK_CLICKHOUSE_DATABASE, LOGBOOK_CLICKHOUSE_USER and LOGBOOK_CLICKHOUSE_PASSWORD.
func ServerFromEnv(ctx context.Context, env *config.Env) (*Store, error) {
	cfg := ServerConfig{
		Addr:     env.Require("LOGBOOK_CLICKHOUSE_ADDR", "the ClickHouse server's native address, host:9000"),
		Database: env.String("LOGBOOK_CLICKHOUSE_DATABASE", "default"),
		Username: env.String("LOGBOOK_CLICKHOUSE_USER", "default"),
		Password: env.String("LOGBOOK_CLICKHOUSE_PASSWORD", ""),
	}
	if err := env.Err(); err != nil {
		return nil, err
	}
	db, err := OpenServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return New(db), nil
}

// Each implements DB.
func (s *Server) Each(ctx context.Context, query string, params Params, dest []any, fn func() error) error {
	rows, err := s.conn.Query(withParams(ctx, params), query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		if err := fn(); err != nil {
			return err
		}
	}
	return rows.Err()
}
