package logstream_test

import (
	"testing"

	"github.com/logbookhq/logbook/pkg/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }
