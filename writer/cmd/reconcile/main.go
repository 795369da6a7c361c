// Command reconcile compares what JetStream accepted with what ClickHouse holds, per organization,
// for a deployment of separate services (LOGBOOK_NATS_URL, LOGBOOK_CLICKHOUSE_ADDR, ...). It prints
// the report as JSON and exits 1 when anything is missing or duplicated. For the single process,
// ask the running instance instead: GET /admin/reconcile.
//
//	reconcile [-since 24h|2026-11-01T00:00:00Z] [-window 1h] [-org org_...]
//
// It holds one window of events in memory at a time (docs/design.md gives its cost).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/writer/reconcile"
)

func main() {
	sinceFlag := flag.String("since", "24h", "reconcile events received since this time (RFC 3339) or this long ago")
	window := flag.Duration("window", reconcile.DefaultWindow, "receive-time window held in memory at once")
	org := flag.String("org", "", "reconcile this organization only")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, reconcile.Options{Window: *window, Org: *org}, *sinceFlag); err != nil {
		fmt.Fprintln(os.Stderr, "reconcile:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, opts reconcile.Options, sinceArg string) error {
	var err error
	if opts.Since, err = reconcile.ParseSince(sinceArg, time.Now()); err != nil {
		return err
	}
	env := config.FromEnv()
	st, err := store.ServerFromEnv(ctx, env)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-reconcile")
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, err := reconcile.Run(ctx, js, st, opts)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return err
	}
	if !rep.OK {
		os.Exit(1)
	}
	return nil
}
