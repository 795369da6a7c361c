package faults

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Acceptance check 13: damage to the raw stream's store (the last block truncated after a crash)
// is detected by reconciliation, not silently passed: the events that reached the valid stream and
// ClickHouse but are gone from the raw stream are named.
func TestReconcileDetectsADamagedStore(t *testing.T) {
	dir := t.TempDir()
	org := "org_damage"
	l := &ledger{sent: map[int]bool{}, acked: map[int]bool{}}
	n := start(t, dir, "")
	for i := 0; i < 300; i++ {
		l.sent[i] = true
		if emit(n.addr, org, i) {
			l.acked[i] = true
		}
	}
	require.Len(t, l.acked, 300)
	waitSettled(t, n)
	ok, _ := reconcileReport(t, n)
	require.True(t, ok, "an undamaged pipeline reconciles cleanly")
	n.kill()

	blocks, err := filepath.Glob(filepath.Join(dir, "nats", "jetstream", "*", "streams", "LOGBOOK_RAW", "msgs", "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	sort.Strings(blocks)
	last := blocks[len(blocks)-1]
	info, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, info.Size()/2))

	n = start(t, dir, "")
	ok, orgs := reconcileReport(t, n)
	assert.False(t, ok, "the damage must be reported")
	var damaged map[string]any
	for _, o := range orgs {
		if o["organization_id"] == org {
			damaged = o
		}
	}
	require.NotNil(t, damaged)
	assert.Positive(t, damaged["unaccepted_count"], "events missing from the raw stream are named")
	assert.NotEmpty(t, damaged["unaccepted"])
	t.Logf("after truncating %s: %v unaccepted events named", filepath.Base(last), damaged["unaccepted_count"])
}

func reconcileReport(t *testing.T, n *node) (bool, []map[string]any) {
	t.Helper()
	return reconcileQuery(t, n, "since=1h")
}

func reconcileQuery(t *testing.T, n *node, query string) (bool, []map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.addr+"/admin/reconcile?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	res, err := client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	var rep struct {
		OK            bool             `json:"ok"`
		Organizations []map[string]any `json:"organizations"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&rep))
	return rep.OK, rep.Organizations
}
