package chdb

import (
	"os"
	"path/filepath"
)

// LibVersion is the pinned version of the npm package
// @chdb/lib-linux-x64-gnu that provides libchdb.so (ClickHouse 26.7).
const LibVersion = "26.7.3-stable.1"

// DefaultLibPath returns $LOGBOOK_CHDB_LIB if set, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/logbook/chdb/<LibVersion>/libchdb.so.
func DefaultLibPath() string {
	if p := os.Getenv("LOGBOOK_CHDB_LIB"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "logbook", "chdb", LibVersion, "libchdb.so")
}

// Error is an error reported by the ClickHouse engine for a statement.
type Error struct {
	// Message is the engine's text, e.g. "Code: 62. DB::Exception: Syntax error: ...".
	Message string
}

// Error returns "clickhouse: " followed by the engine's message.
func (e *Error) Error() string { return "clickhouse: " + e.Message }
