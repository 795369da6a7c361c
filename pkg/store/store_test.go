package store_test

import (
	"os"
	"testing"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/storetest"
)

func record(org string, i int, at time.Time) *event.Record { return storetest.Record(org, i, at) }

// The store suite (pkg/storetest) on the embedded engine; deploy/servertest runs the same cases on
// a ClickHouse server.
func TestStoreSuiteOnTheEmbeddedEngine(t *testing.T) {
	storetest.RunSuite(t, storetest.Shared(t))
}

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
