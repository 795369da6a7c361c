package app

import (
	"context"
	"runtime/pprof"
)

// Profiler labels. Every goroutine a part of Logbook starts carries the label stage=<part>
// (goroutines inherit their creator's labels), so a CPU profile of the process
// (LOGBOOK_PPROF_ADDR) tells the pipeline's stages apart: `make bench` reports CPU per event per
// stage from it. What the parts run inside the embedded ClickHouse engine is told apart by the
// stack (pkg/chdb, libchdb.so), whatever the label.
const (
	StageLabel     = "stage"
	StageHTTP      = "http"      // the HTTP server: ingest requests (the gateway) and reads
	StageGateway   = "gateway"   // the raw stream's group committer
	StageNATS      = "nats"      // the embedded nats-server and the client connection
	StageValidator = "validator" // the validator loops and their committers
	StageWriter    = "writer"    // the batch writers
	StageOutputs   = "outputs"   // log streams and alert rules
	StageQuery     = "query"     // exports
	StageOther     = "other"     // trimmer, retention sweep
)

type run struct {
	stage string
	fn    func(context.Context) error
}

// stage runs f with the profiler label stage=name; goroutines f starts keep it.
func stage(name string, f func()) {
	pprof.Do(context.Background(), pprof.Labels(StageLabel, name), func(context.Context) { f() })
}
