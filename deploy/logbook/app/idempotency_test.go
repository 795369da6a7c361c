package app

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
)

// Idempotency-Keys store one row per key, whatever the order and timing of the attempts: many
// concurrent attempts with different bodies (one 200, the rest 409), with the same body (all 200),
// bulk lines sharing keys with each other and with single requests, and every repeat again after
// JetStream's duplicate window (1 s here). Rows are counted with ClickHouse's merges stopped, so the
// ReplacingMergeTree cannot hide a duplicate, and as valid-stream messages (one message is one row
// the writer inserts).
func TestKeyedRequestsStoreOneRowEach(t *testing.T) {
	a := startEnv(t, map[string]string{"LOGBOOK_STREAM_DUPLICATES": "1s"})
	db := stopMerges(t, a)
	c := a.client(t, testKey)
	const org = "org_keys"
	at := time.Now().Add(-time.Hour)
	body := func(i int) []byte { return eventBody(org, "user.signed_in", at, map[string]any{"i": i}) }

	const n = 24
	attempts := func() map[string]map[int]int {
		codes := map[string]map[int]int{"diff": {}, "same": {}}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(2)
			go func() {
				defer wg.Done()
				r := c.do("POST", "/audit_logs/events", body(1000+i), "Idempotency-Key", "diff")
				mu.Lock()
				codes["diff"][r.status]++
				mu.Unlock()
			}()
			go func() {
				defer wg.Done()
				r := c.do("POST", "/audit_logs/events", body(1), "Idempotency-Key", "same")
				mu.Lock()
				codes["same"][r.status]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return codes
	}
	codes := attempts()
	assert.Equal(t, map[int]int{200: 1, 409: n - 1}, codes["diff"], "different bodies: exactly one is stored")
	assert.Equal(t, map[int]int{200: n}, codes["same"], "the same body: every attempt is answered 200")

	lines := []string{ndjsonKeyed(t, body(1), "same"), ndjsonKeyed(t, body(2), "b"), ndjsonKeyed(t, body(2), "b"), ndjsonKeyed(t, body(3), "b")}
	// In one request, the first line with a key is the request and later ones repeat it.
	status, out := c.bulk([]byte(strings.Join(lines, "\n")), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", out)
	results := out["results"].([]any)
	for i, want := range []string{"duplicate", "accepted", "duplicate", "error"} {
		assert.Equal(t, want, results[i].(map[string]any)["status"], "line %d: %v", i+1, results[i])
	}

	time.Sleep(1500 * time.Millisecond) // past JetStream's duplicate window: the keys still hold
	codes = attempts()
	assert.Equal(t, map[int]int{200: 1, 409: n - 1}, codes["diff"], "only the stored body is a repeat")
	assert.Equal(t, map[int]int{200: n}, codes["same"])
	status, out = c.bulk([]byte(strings.Join(lines, "\n")), "application/x-ndjson")
	require.Equal(t, 200, status, "%v", out)
	assert.Equal(t, float64(3), out["duplicates"], "%v", out)
	assert.Equal(t, float64(1), out["failed"], "%v", out)

	waitSettled(t, a)
	rows := rowsPerID(t, db, org)
	assert.Len(t, rows, 3, "three keys, three events")
	for id, n := range rows {
		assert.Equal(t, uint64(1), n, "rows of %s", id)
	}
	valid := validPerID(t, a, org)
	assert.Len(t, valid, 3)
	for id, n := range valid {
		assert.Equal(t, 1, n, "valid-stream messages of %s", id)
	}
}

func ndjsonKeyed(t *testing.T, body []byte, key string) string {
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m))
	m["idempotency_key"] = key
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return string(b)
}

// stopMerges stops ClickHouse's background merges of the events table for the rest of the test,
// so rows stored twice stay two rows, and returns the engine to query it.
func stopMerges(t *testing.T, a *App) store.DB {
	var db store.DB
	a.store.Decorate(func(d store.DB) store.DB { db = d; return d })
	require.NoError(t, db.Exec(context.Background(), "SYSTEM STOP MERGES events", nil))
	return db
}

// rowsPerID counts org's stored rows per event id.
func rowsPerID(t *testing.T, db store.DB, org string) map[string]uint64 {
	t.Helper()
	rows, err := db.Query(context.Background(),
		`SELECT id, count() FROM events WHERE organization_id = {org:String} GROUP BY id`, store.Params{"org": store.Text(org)})
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var id string
		var n uint64
		require.NoError(t, rows.Scan(&id, &n))
		out[id] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// validPerID counts org's messages in the valid stream per event id.
func validPerID(t *testing.T, a *App, org string) map[string]int {
	t.Helper()
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, event.StreamValid, jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.ValidSubject(org)}})
	require.NoError(t, err)
	out := map[string]int{}
	for {
		b, err := cons.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		require.NoError(t, err)
		got := 0
		for m := range b.Messages() {
			got++
			rec, err := event.Unmarshal(m.Data())
			require.NoError(t, err)
			out[rec.ID]++
		}
		if got == 0 {
			return out
		}
	}
}

// waitSettled waits until the validator and the writer have nothing pending or unacknowledged.
func waitSettled(t *testing.T, a *App) {
	t.Helper()
	js, err := jetstream.New(a.nc)
	require.NoError(t, err)
	ctx := context.Background()
	require.Eventually(t, func() bool {
		for _, sc := range [][2]string{{event.StreamRaw, event.ConsumerValidator}, {event.StreamValid, event.ConsumerWriter}} {
			cons, err := js.Consumer(ctx, sc[0], sc[1])
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the pipeline never settled")
}
