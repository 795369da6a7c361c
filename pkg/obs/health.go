package obs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Check reports whether a dependency is reachable now; it must honour ctx's deadline.
type Check func(ctx context.Context) error

// CheckTimeout bounds each readiness check.
const CheckTimeout = 2 * time.Second

// Health answers liveness and readiness. A check added with Add makes the process unready while it
// fails ("failing", 503); one added with AddDegraded only reports "degraded" (200, status
// "degraded"): the process still does its work, but an operator should look (a backlog growing
// old behind a stopped writer, a stream filling up). Safe for concurrent use.
type Health struct {
	log      *slog.Logger
	mu       sync.Mutex
	checks   []namedCheck
	failing  map[string]bool // last outcome per check, to log changes only
	stopping atomic.Bool
}

type namedCheck struct {
	name     string
	check    Check
	degrades bool // failing reports "degraded" and leaves the process ready
}

// NewHealth returns a Health with no checks: ready until Stopping.
func NewHealth(log *slog.Logger) *Health {
	return &Health{log: log, failing: map[string]bool{}}
}

// Add makes readiness depend on check, reported under name ("nats", "clickhouse").
func (h *Health) Add(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, check, false})
}

// AddDegraded reports check under name as "degraded" while it fails, without making the process
// unready.
func (h *Health) AddDegraded(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, check, true})
}

// Stopping turns readiness false for good: the process is shutting down.
func (h *Health) Stopping() { h.stopping.Store(true) }

// Ready runs every check concurrently (each bounded by CheckTimeout) and returns each one's
// outcome ("ok", "failing", or "degraded" for checks added with AddDegraded) and whether no check
// is failing and the process is not stopping. Failures are logged when a check changes state, not
// on every probe.
func (h *Health) Ready(ctx context.Context) (map[string]string, bool) {
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			errs[i] = c.check(cctx)
		}()
	}
	wg.Wait()
	out := make(map[string]string, len(checks))
	ok := !h.stopping.Load()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range checks {
		failing := errs[i] != nil
		state := "failing"
		if c.degrades {
			state = "degraded"
		}
		if failing != h.failing[c.name] {
			if failing {
				h.log.Warn("readiness check "+state, "check", c.name, "err", errs[i])
			} else {
				h.log.Info("readiness check passing again", "check", c.name)
			}
			h.failing[c.name] = failing
		}
		out[c.name] = "ok"
		if failing {
			out[c.name] = state
			ok = ok && c.degrades
		}
	}
	return out, ok
}

// ServeLive answers 200 while the process runs: GET /healthz.
func (h *Health) ServeLive(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// ServeReady answers GET /readyz: 200 "ok" when every check passes, 200 "degraded" when only
// checks added with AddDegraded fail, else 503 "unavailable" ("stopping" once shutting down). The
// body names each check's outcome; the causes go to the log, not to whoever asks.
func (h *Health) ServeReady(w http.ResponseWriter, r *http.Request) {
	checks, ok := h.Ready(r.Context())
	body := map[string]any{"status": "ok", "checks": checks}
	status := http.StatusOK
	for _, v := range checks {
		if v == "degraded" {
			body["status"] = "degraded"
		}
	}
	if !ok {
		body["status"], status = "unavailable", http.StatusServiceUnavailable
		if h.stopping.Load() {
			body["status"] = "stopping"
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NATSCheck passes while js's connection is connected and JetStream answers an account-info request.
func NATSCheck(js jetstream.JetStream) Check {
	return func(ctx context.Context) error {
		if s := js.Conn().Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats connection is %s", s)
		}
		if _, err := js.AccountInfo(ctx); err != nil {
			return fmt.Errorf("jetstream is not answering: %w", err)
		}
		return nil
	}
}
