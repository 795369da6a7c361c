package benchmark

import (
	"math"
	"testing"
	"time"
)

// A `go tool pprof -traces` listing of a Logbook profile, one sample of each kind.
const tracesListing = `File: logbook
Type: cpu
Time: 2026-12-02 07:37:02 UTC
Duration: 5s, Total samples = 1.91s (38.20%)
-----------+-------------------------------------------------------
     stage:  writer
     100ms   runtime.cgocall
             github.com/ebitengine/purego.SyscallN
             github.com/logbookhq/logbook/pkg/chdb.(*Conn).Query
             github.com/logbookhq/logbook/writer/batcher.(*Writer).flush
-----------+-------------------------------------------------------
     stage:  writer
     200ms   encoding/json.Marshal
             github.com/logbookhq/logbook/writer/batcher.(*Writer).rows
-----------+-------------------------------------------------------
     stage:  validator
     300ms   github.com/kaptinlin/jsonschema.(*Schema).Validate
             github.com/logbookhq/logbook/validator/worker.(*Worker).handle
-----------+-------------------------------------------------------
     stage:  nats
     400ms   syscall.Syscall
             github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks
-----------+-------------------------------------------------------
     stage:  validator
      50ms   github.com/nats-io/nats-server/v2/server.(*client).processInboundClientMsg
             github.com/logbookhq/logbook/validator/worker.(*Worker).handle
-----------+-------------------------------------------------------
     stage:  http
     bytes:  512B
     250ms   github.com/labstack/echo/v4.(*Echo).ServeHTTP
             net/http.serverHandler.ServeHTTP
-----------+-------------------------------------------------------
     stage:  gateway
      10ms   github.com/logbookhq/logbook/pkg/natsx.(*GroupCommit).loop
-----------+-------------------------------------------------------
     500ms   00007f3a5c2b1e40 [libchdb.so]
             runtime._ExternalCode
-----------+-------------------------------------------------------
      40ms   00007f3a61a0c1d2 [libc.so.6]
             runtime._ExternalCode
-----------+-------------------------------------------------------
      30ms   runtime.scanobject
             runtime.gcDrain
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
      20ms   runtime.write1
             github.com/nats-io/nats.go.(*Conn).flusher
-----------+-------------------------------------------------------
     stage:  other
      10ms   github.com/logbookhq/logbook/pkg/natsx.(*Trimmer).Run
-----------+-------------------------------------------------------
`

func TestClassifyTraces(t *testing.T) {
	got := classifyTraces([]byte(tracesListing))
	want := map[string]float64{
		"engine":    0.100 + 0.500 + 0.040, // purego call from the writer, the engine's own threads
		"writer":    0.200,
		"validator": 0.300,
		"nats":      0.400 + 0.050 + 0.020, // nats-server code under any label; the client's flusher
		"gateway":   0.250 + 0.010,         // the HTTP handlers and the group committer
		"runtime":   0.030,
		"other":     0.010,
	}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-9 {
			t.Errorf("%s: got %.3fs, want %.3fs", k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected stage %q: %.3fs", k, got[k])
		}
	}
}

func TestSpreadAndPerEvent(t *testing.T) {
	s := spread(map[string]float64{"writer": 1, "engine": 3}, 8) // profile saw 4 s, the process used 8
	if s["writer"] != 2 || s["engine"] != 6 {
		t.Fatalf("spread: got %v", s)
	}
	if len(spread(nil, 8)) != 0 {
		t.Fatal("spread of no samples is not empty")
	}
	st := &StageCPU{Events: 100_000, CPU: 8, Seconds: s}
	if got := st.PerEvent("writer"); got != 20*time.Microsecond {
		t.Errorf("writer per event: got %v, want 20µs", got)
	}
	if got := st.PerEvent("nats"); got != 0 {
		t.Errorf("nats per event: got %v, want 0", got)
	}
	if got := st.Total(); got != 80*time.Microsecond {
		t.Errorf("total per event: got %v, want 80µs", got)
	}
	if got := (&StageCPU{CPU: 1}).Total(); got != 0 {
		t.Errorf("no events: got %v", got)
	}
}
