package sdktest

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/deploy/logbook/app"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/storetest"
)

const apiKey = "sk_test_sdk_0123456789abcdef0123456789"

// logbook is the one Logbook every test in this binary talks to (one embedded ClickHouse engine per
// process); baseURL is its root.
var (
	logbook *app.App
	baseURL string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "logbook-sdktest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env := config.FromMap(map[string]string{
		"LOGBOOK_DATA_DIR": dir,
		"LOGBOOK_ADDR":     "127.0.0.1:0",
		"LOGBOOK_API_KEY":  apiKey,
	})
	cfg := app.ConfigFromEnv(env)
	cfg.StopMerges = true // every stored row stays visible to storetest.Copies
	logbook, err = app.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(os.Stderr, "logbook did not start (run `make libchdb` if the ClickHouse engine is missing): %v\n", err)
		return 1
	}
	defer logbook.Close()
	baseURL = "http://" + logbook.Addr
	return m.Run()
}

// storedEvents waits until org has want events in ClickHouse (and no more arrive for a moment),
// then returns how many rows and distinct event ids it holds, counted by storetest.Copies: merges
// are stopped in this Logbook, so a duplicate row cannot have been merged away before the count.
func storedEvents(t *testing.T, org string, want uint64) (rows, distinct uint64) {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool {
		rows, _, _ = logbook.Store().Count(ctx, org)
		return rows >= want
	}, 20*time.Second, 20*time.Millisecond, "%s never had %d events stored", org, want)
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up, were there one
	rows = 0
	copies := storetest.Copies(t, logbook.Store(), org)
	for _, n := range copies {
		rows += n
	}
	return rows, uint64(len(copies))
}

// download fetches an export link without an API key and parses the CSV.
func download(t *testing.T, link string) [][]string {
	t.Helper()
	u, err := url.Parse(link)
	require.NoError(t, err)
	assert.Equal(t, "/audit_logs/exports/", u.Path[:len("/audit_logs/exports/")])
	res, err := http.Get(link)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	assert.Equal(t, "text/csv; charset=utf-8", res.Header.Get("Content-Type"))
	return parseCSV(t, body)
}

func parseCSV(t *testing.T, body []byte) [][]string {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	require.NoError(t, err, "%s", body)
	require.NotEmpty(t, rows)
	require.Equal(t, "id", rows[0][0], "a header row")
	return rows
}

// column returns the values of the named column, header excluded.
func column(t *testing.T, rows [][]string, name string) []string {
	t.Helper()
	for i, h := range rows[0] {
		if h == name {
			var out []string
			for _, r := range rows[1:] {
				out = append(out, r[i])
			}
			return out
		}
	}
	t.Fatalf("no column %q in %v", name, rows[0])
	return nil
}

// nodeSDKDir is where `make sdk` installed the Node SDKs (LOGBOOK_SDK_NODE_DIR, exported by the
// Makefile, or the same default as deploy/scripts/fetch-sdks.sh).
func nodeSDKDir() string {
	if d := os.Getenv("LOGBOOK_SDK_NODE_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "logbook", "sdk", "node-11.0.0-8.13.0")
}

func uniqueOrg(prefix string) string {
	return fmt.Sprintf("org_%s_%d", prefix, time.Now().UnixNano())
}

func containsAll(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		assert.Contains(t, got, w)
	}
	assert.Len(t, got, len(want), "%v", got)
}

// logbookRetention is the retention Logbook applies to org now.
func logbookRetention(t *testing.T, org string) uint16 {
	t.Helper()
	return logbook.Retention().Days(org)
}
