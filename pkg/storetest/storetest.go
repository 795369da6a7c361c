// Package storetest gives tests a real ClickHouse: the embedded engine (chDB) on a temporary data
// directory, migrated, with merges stopped (store.StopMerges) so that every duplicate stays visible
// to Copies. The engine allows one instance per process, so every test in a test binary shares it;
// tests keep apart by using their own organization ids (NewOrg).
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/logbookhq/logbook/pkg/chdb"
	"github.com/logbookhq/logbook/pkg/store"
)

var (
	once   sync.Once
	engine *store.Embedded
	shared *store.Store
	err    error
)

// Shared returns the process-wide Store on the embedded engine. It fails the test, naming the fix,
// when libchdb.so is missing: pipeline tests never run without the real engine.
func Shared(t testing.TB) *store.Store {
	t.Helper()
	once.Do(func() {
		dir, derr := os.MkdirTemp("", "logbook-chdb-")
		if derr != nil {
			err = derr
			return
		}
		db, oerr := store.OpenEmbedded(chdb.DefaultLibPath(), dir)
		if oerr != nil {
			err = oerr
			return
		}
		engine, shared = db, store.New(db)
		if err = shared.Migrate(context.Background()); err == nil {
			err = shared.StopMerges(context.Background())
		}
	})
	if err != nil {
		t.Fatalf("embedded ClickHouse unavailable (run `make libchdb` to fetch libchdb.so): %v", err)
	}
	return shared
}

// Main runs a test binary's tests and then closes the shared engine, if a test opened it: an
// engine still running when the process exits crashes the race detector's exit (racefini) with a
// SIGSEGV. Call it from TestMain: os.Exit(storetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		_ = shared.Close()
	}
	return code
}

// SharedEngine returns the DB under Shared's Store: the embedded engine itself (for its Priority
// view and for statements the Store does not have).
func SharedEngine(t testing.TB) *store.Embedded {
	t.Helper()
	Shared(t)
	return engine
}

// NewOrg returns a fresh organization id, so tests sharing the engine never see each other's rows.
func NewOrg(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "org_test_" + hex.EncodeToString(b[:])
}

// Copies returns how many rows hold each stored event id of org: the duplicate check every test
// that claims "stored once" uses (the faults tests, chaos, the single-process and SDK tests, the
// writer's). It counts rows per id (no FINAL, no DISTINCT), and it fails the test unless merges are
// stopped on s (store.StopMerges; Shared's store has them stopped): ReplacingMergeTree collapses
// rows with the same id at some background merge, and a check running after that merge would see
// one row where two were stored.
func Copies(t testing.TB, s *store.Store, org string) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	stopped, err := s.MergesStopped(ctx)
	if err != nil {
		t.Fatalf("failed to read the events table's settings: %v", err)
	}
	if !stopped {
		t.Fatal("merges are not stopped on this store (store.StopMerges): a merge could hide duplicates from the check")
	}
	out := map[string]uint64{}
	if err := s.EachID(ctx, store.IDFilter{Org: org}, func(_, id string, rows uint64) error {
		out[id] = rows
		return nil
	}); err != nil {
		t.Fatalf("failed to count stored rows of %s: %v", org, err)
	}
	return out
}

// Duplicates returns the ids of org held by more than one row, sorted (see Copies).
func Duplicates(t testing.TB, s *store.Store, org string) []string {
	t.Helper()
	var out []string
	for id, n := range Copies(t, s, org) {
		if n > 1 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
