//go:build nochdb

package chdb

import (
	"context"
	"errors"
)

// ErrNotBuiltIn is what Open and every Conn method return in a binary built with the nochdb tag:
// the separate services, which reach a ClickHouse server and ship as static binaries on an image
// without a dynamic loader (loading libchdb.so through purego makes a binary dynamically linked).
var ErrNotBuiltIn = errors.New("chdb: this binary was built without the embedded ClickHouse engine (build tag nochdb)")

// Conn stands in for a connection to the engine; it cannot be opened.
type Conn struct{}

// Open returns ErrNotBuiltIn.
func Open(libPath, dataDir string, args ...string) (*Conn, error) { return nil, ErrNotBuiltIn }

// Query returns ErrNotBuiltIn.
func (c *Conn) Query(ctx context.Context, query, format string, params map[string]string) ([]byte, error) {
	return nil, ErrNotBuiltIn
}

// QueryPriority returns ErrNotBuiltIn.
func (c *Conn) QueryPriority(ctx context.Context, query, format string, params map[string]string) ([]byte, error) {
	return nil, ErrNotBuiltIn
}

// QueryStream returns ErrNotBuiltIn.
func (c *Conn) QueryStream(ctx context.Context, query, format string, params map[string]string, fn func(chunk []byte) error) error {
	return ErrNotBuiltIn
}

// Close does nothing.
func (c *Conn) Close() error { return nil }
