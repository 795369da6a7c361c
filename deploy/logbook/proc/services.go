package proc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// BuildAndRun is a TestMain for packages that run the binaries: it builds bins into a temporary
// directory, sets *paths to their paths by name, runs the tests, removes the directory and
// returns m.Run's exit code (1 when the build failed).
func BuildAndRun(m *testing.M, paths *map[string]string, bins ...Binary) int {
	dir, err := os.MkdirTemp("", "logbook-proc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to make a directory for the binaries:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	*paths, err = Build(ctx, dir, bins...)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to build the binaries:", err)
		return 1
	}
	return m.Run()
}

// Service is a Logbook process with its API address ("" for a validator) and the URL of its
// /readyz (the admin listener of a service, the main listener of `logbook`).
type Service struct {
	*Process
	Addr, Ready string
}

// WaitReady waits until s's /readyz answers 200.
func (s *Service) WaitReady(t testing.TB) {
	t.Helper()
	WaitStatus(t, s.Process, s.Ready, http.StatusOK, 90*time.Second)
}

// StartStorage starts `logbook` (path) as a storage node (LOGBOOK_ROLES=writer,query) on a free
// address, with env (NATS, key, data directory, …) added.
func StartStorage(t testing.TB, path string, env ...string) *Service {
	t.Helper()
	addr := FreeAddr(t)
	return &Service{Addr: addr, Ready: "http://" + addr + "/readyz", Process: Start(t, "storage", path, nil,
		append(env, "LOGBOOK_ROLES=writer,query", "LOGBOOK_ADDR="+addr))}
}

// StartIngest starts the ingest service (path) as name, its API and admin listeners on free
// addresses, with env added.
func StartIngest(t testing.TB, name, path string, env ...string) *Service {
	t.Helper()
	addr, admin := FreeAddr(t), FreeAddr(t)
	return &Service{Addr: addr, Ready: "http://" + admin + "/readyz", Process: Start(t, name, path, nil,
		append(env, "LOGBOOK_ADDR="+addr, "LOGBOOK_ADMIN_ADDR="+admin))}
}

// StartValidator starts the validator service (path) as name, its admin listener on a free
// address, with env added.
func StartValidator(t testing.TB, name, path string, env ...string) *Service {
	t.Helper()
	admin := FreeAddr(t)
	return &Service{Ready: "http://" + admin + "/readyz", Process: Start(t, name, path, nil,
		append(env, "LOGBOOK_ADMIN_ADDR="+admin))}
}

// Emit posts one event of org, numbered n (metadata.n) and dated at, to the API at addr with key,
// under the Idempotency-Key "<org>-<n>" as the SDKs send one; it returns the status (0: no answer).
func Emit(client *http.Client, addr, key, org string, n int, at time.Time) int {
	body, _ := json.Marshal(map[string]any{
		"organization_id": org,
		"event": map[string]any{
			"action": "doc.updated", "occurred_at": at.UTC().Format(time.RFC3339Nano),
			"actor":    map[string]any{"id": "user_1", "type": "user"},
			"targets":  []any{map[string]any{"id": "doc_1", "type": "doc"}},
			"context":  map[string]any{"location": "127.0.0.1"},
			"metadata": map[string]any{"n": n},
		},
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/audit_logs/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", org, n))
	res, err := client.Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}
