package app

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
)

// LOGBOOK_WRITERS runs that many writer loops on the one durable consumer and batch ledger (issue
// 9 item 8); LOGBOOK_BATCH_BYTES bounds a batch's bytes (item 4).
func TestWriterSettingsFromEnv(t *testing.T) {
	e := config.FromMap(map[string]string{"LOGBOOK_WRITERS": "3", "LOGBOOK_BATCH_BYTES": "1048576"})
	cfg := ConfigFromEnv(e)
	require.NoError(t, e.Err())
	assert.Equal(t, 3, cfg.Writers)
	assert.Equal(t, 1<<20, cfg.Writer.MaxBytes)
	cfg = ConfigFromEnv(config.FromMap(nil))
	assert.Equal(t, 1, cfg.Writers, "one writer loop by default")
	assert.Equal(t, 16<<20, cfg.Writer.MaxBytes)
	for _, bad := range []map[string]string{{"LOGBOOK_WRITERS": "0"}, {"LOGBOOK_WRITERS": "17"}, {"LOGBOOK_BATCH_BYTES": "1000"}} {
		e := config.FromMap(bad)
		ConfigFromEnv(e)
		assert.Error(t, e.Err(), "%v", bad)
	}
}

// Three writer loops in one process store every event once (counted as rows per id, merges
// stopped), in small batches that interleave on the shared consumer.
func TestSeveralWriterLoopsStoreEachEventOnce(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_WRITERS": "3", "LOGBOOK_BATCH_ROWS": "15"})
	c := a.client(t, testKey)
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lines := make([]string, 100)
			for i := range lines {
				lines[i] = ndjsonLine("org_writers", r*100+i, fmt.Sprintf("k%d-%d", r, i))
			}
			status, out := c.bulk([]byte(strings.Join(lines, "\n")), "application/x-ndjson")
			assert.Equal(t, 200, status, "%v", out)
		}()
	}
	wg.Wait()
	c.waitFor("org_writers", 400)
	assert.Equal(t, uint64(400), storedCount(t, a, "org_writers"))
}

// GET /admin/reconcile keeps working with its new parameters: a window, one organization; bad
// values are 400.
func TestReconcileRoute(t *testing.T) {
	a := startT(t)
	c := a.client(t, testKey)
	lines := make([]string, 20)
	for i := range lines {
		lines[i] = ndjsonLine("org_recon", i, fmt.Sprintf("r%d", i))
	}
	status, out := c.bulk([]byte(strings.Join(lines, "\n")), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", out)
	c.waitFor("org_recon", 20)
	require.Eventually(t, func() bool {
		r := c.do("GET", "/admin/reconcile?since=1h&window=10m&organization_id=org_recon", nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		orgs, _ := r.body["organizations"].([]any)
		if len(orgs) != 1 {
			return false
		}
		o := orgs[0].(map[string]any)
		return r.body["ok"] == true && o["stored"] == float64(20) && o["in_flight"] == float64(0) && r.body["window"] == "10m0s"
	}, 20*time.Second, 100*time.Millisecond, "reconciliation of the organization never came out clean")
	for _, q := range []string{"window=1s", "window=often", "organization_id=org%20bad", "since=yesterday"} {
		r := c.do("GET", "/admin/reconcile?"+q, nil)
		assert.Equal(t, 400, r.status, "%s: %s", q, r.raw)
	}
}
