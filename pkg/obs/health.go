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

// Health answers liveness and readiness. Safe for concurrent use.
type Health struct {
	log      *slog.Logger
	mu       sync.Mutex
	checks   []namedCheck
	failing  map[string]bool // last outcome per check, to log changes only
	stopping atomic.Bool
}

type namedCheck struct {
	name  string
	check Check
	// degrades: a failure reports "degraded" and leaves the process ready (it can still do its
	// work; operators must look).
	degrades bool
}

// NewHealth returns a Health with no checks: ready until Stopping.
func NewHealth(log *slog.Logger) *Health {
	return &Health{log: log, failing: map[string]bool{}}
}

// Add makes readiness depend on check, reported under name ("nats", "clickhouse").
func (h *Health) Add(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name: name, check: check})
}

// AddDegraded adds a check whose failure reports the process "degraded" (the check says
// "degraded", the status too) without making it unready: /readyz still answers 200, so a balancer
// keeps sending work, while operators and alerts see it.
func (h *Health) AddDegraded(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name: name, check: check, degrades: true})
}

// Stopping turns readiness false for good: the process is shutting down.
func (h *Health) Stopping() { h.stopping.Store(true) }

// Ready runs every check concurrently (each bounded by CheckTimeout) and returns each one's
// outcome ("ok", "failing", or "degraded" for a check added with AddDegraded) and whether all
// checks but those passed and the process is not stopping. Failures are logged when a check
// changes state, not on every probe.
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
		if failing != h.failing[c.name] {
			if failing {
				h.log.Warn("readiness check failing", "check", c.name, "err", errs[i])
			} else {
				h.log.Info("readiness check passing again", "check", c.name)
			}
			h.failing[c.name] = failing
		}
		out[c.name] = "ok"
		switch {
		case failing && c.degrades:
			out[c.name] = "degraded"
		case failing:
			out[c.name], ok = "failing", false
		}
	}
	return out, ok
}

// ServeLive answers 200 while the process runs: GET /healthz.
func (h *Health) ServeLive(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// ServeReady answers 200 when every check passes (status "ok", or "degraded" when a check added
// with AddDegraded fails), else 503: GET /readyz. The body names each check's outcome; the causes
// go to the log, not to whoever asks.
func (h *Health) ServeReady(w http.ResponseWriter, r *http.Request) {
	checks, ok := h.Ready(r.Context())
	body := map[string]any{"status": "ok", "checks": checks}
	for _, v := range checks {
		if v == "degraded" {
			body["status"] = "degraded"
		}
	}
	status := http.StatusOK
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
