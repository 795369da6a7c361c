// Command logbook runs all of Logbook in one process, with its data on disk (see the README).
// `logbook keys list|create|revoke …` manages its API keys.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/logbookhq/logbook/deploy/logbook/app"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/failpoint"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "keys" { // logbook keys list|create|revoke …
		code := keysMain(ctx, os.Args[2:])
		stop()
		os.Exit(code)
	}
	env := config.FromEnv()
	log := env.Logger()
	cfg := app.ConfigFromEnv(env)
	if err := errors.Join(env.Err(), failpoint.Err()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultGoMemoryLimit)
	}
	if addr := os.Getenv("LOGBOOK_PPROF_ADDR"); addr != "" {
		servePprof(addr) // profiling for `make bench`; off unless set
	}
	a, err := app.Start(ctx, cfg, log)
	if err != nil {
		log.Error("logbook failed to start", "err", err)
		os.Exit(1)
	}
	if a.GeneratedKey != "" {
		fmt.Printf("\nGenerated API key (shown once; only its hash is stored):\n\n    %s\n\n", a.GeneratedKey)
	}
	fmt.Printf("Logbook is listening on http://%s (data in %s)\n", a.Addr, cfg.DataDir)
	<-ctx.Done()
	log.Info("shutting down")
	if err := a.Close(); err != nil {
		log.Error("shutdown incomplete", "err", err)
		os.Exit(1)
	}
}

// defaultGoMemoryLimit is the Go runtime's soft memory limit when GOMEMLIMIT is unset: the Go heap
// (gateway, validator, writer, the embedded nats-server) collects harder as it nears it, instead of
// growing to twice its live size. The embedded engine's memory is bounded apart
// (LOGBOOK_ENGINE_MAX_MEMORY); the two with libchdb's code pages make the process's resident size.
const defaultGoMemoryLimit = 1 << 30

// servePprof serves net/http/pprof on its own listener (LOGBOOK_PPROF_ADDR, e.g. 127.0.0.1:6060),
// never on the API's.
func servePprof(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.ListenAndServe(addr, mux) }()
}
