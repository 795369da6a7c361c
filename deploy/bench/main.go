// Command bench is `make bench`: it builds and starts the single-process Logbook on a fresh data
// directory, loads it over HTTP, measures the ceilings (raw JetStream publishing, raw ClickHouse
// INSERT) in the same run, and prints one table, also written to docs/benchmarks.md.
// BENCH_QUICK=1 (or -quick) is a smoke run with small sizes. See package benchmark.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/logbookhq/logbook/deploy/bench/benchmark"
)

func main() {
	cfg, err := benchmark.ParseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := benchmark.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
