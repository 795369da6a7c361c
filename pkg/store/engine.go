package store

import (
	"sort"
	"strconv"

	"github.com/logbookhq/logbook/pkg/config"
)

// EngineMemory bounds the memory of the embedded engine (chDB), which runs in Logbook's process
// beside the Go heap. Left to itself the engine sizes its limit and caches from the machine's RAM
// (a limit of 90 % of it, 5 GiB for each of the mark, index-mark and primary-index caches), which
// is no bound for a process that shares the machine. Zero leaves a setting at the engine's default.
type EngineMemory struct {
	// MaxServerMemory is the engine's max_server_memory_usage: statements that would take its
	// tracked memory (caches, merges, queries, inserts) past it fail with MEMORY_LIMIT_EXCEEDED
	// (an INSERT is retried by the writer, a search answers an error). Default 1 GiB.
	MaxServerMemory int64
	// CacheBytes caps each of the engine's mark_cache_size, index_mark_cache_size and
	// primary_index_cache_size. Default 128 MiB; the events table's marks and primary index
	// take a few MiB per 10 million rows.
	CacheBytes int64
}

// DefaultEngineMemory returns the defaults documented on EngineMemory.
func DefaultEngineMemory() EngineMemory {
	return EngineMemory{MaxServerMemory: 1 << 30, CacheBytes: 128 << 20}
}

// EngineMemoryFromEnv reads LOGBOOK_ENGINE_MAX_MEMORY and LOGBOOK_ENGINE_CACHE_BYTES over
// DefaultEngineMemory (0: the engine's own default).
func EngineMemoryFromEnv(env *config.Env) EngineMemory {
	m := DefaultEngineMemory()
	m.MaxServerMemory = env.Int("LOGBOOK_ENGINE_MAX_MEMORY", m.MaxServerMemory, 0, 1<<50)
	m.CacheBytes = env.Int("LOGBOOK_ENGINE_CACHE_BYTES", m.CacheBytes, 0, 1<<50)
	return m
}

// Settings returns the engine's server settings for m.
func (m EngineMemory) Settings() map[string]string {
	s := map[string]string{}
	if m.MaxServerMemory > 0 {
		s["max_server_memory_usage"] = strconv.FormatInt(m.MaxServerMemory, 10)
	}
	if m.CacheBytes > 0 {
		for _, k := range []string{"mark_cache_size", "index_mark_cache_size", "primary_index_cache_size"} {
			s[k] = strconv.FormatInt(m.CacheBytes, 10)
		}
	}
	return s
}

// Args returns m's settings as the engine's start arguments (--name=value), in name order.
func (m EngineMemory) Args() []string {
	s := m.Settings()
	args := make([]string, 0, len(s))
	for k, v := range s {
		args = append(args, "--"+k+"="+v)
	}
	sort.Strings(args)
	return args
}
