package export_test

import (
	"os"
	"testing"

	"github.com/logbookhq/logbook/pkg/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
