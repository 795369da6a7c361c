package export_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/settle"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/export"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

type noRetention struct{}

func (noRetention) Days(string) uint16 { return 0 }

// A job left pending by a process that died (its lease ran out) is picked up by another replica's
// sweep and finished; one that has used up its attempts is marked "error" instead of staying
// pending forever.
func TestAbandonedJobsAreFinishedOrFailed(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	require.NoError(t, st.Insert(ctx, "test:"+org+":export", []*event.Record{{
		ID: "01EXPORTTEST0000000000001", OrganizationID: org, ReceivedAt: at,
		Event: event.Event{Action: "user.signed_in", OccurredAt: at, Actor: event.Entity{ID: "u1", Type: "user", Name: "-cmd|' /C calc'!A0"},
			Targets: []event.Entity{}, Context: event.Context{Location: "\t1.2.3.4"}},
	}}))

	jobs, err := js.KeyValue(ctx, event.BucketExports)
	require.NoError(t, err)
	put := func(id string, attempts int) {
		raw, _ := json.Marshal(export.Job{
			ID: id, OrganizationID: org, State: export.StatePending, CreatedAt: at, UpdatedAt: at,
			Filter:   export.Filter{RangeStart: at.Add(-time.Minute), RangeEnd: time.Now().Add(time.Minute)},
			Attempts: attempts, LeaseOwner: "a-process-that-died", LeaseUntil: time.Now().Add(-time.Second),
		})
		_, err := jobs.Put(ctx, id, raw)
		require.NoError(t, err)
	}
	const retried, exhausted = "audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FA1", "audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FA2"
	put(retried, 1)
	put(exhausted, 3)

	cfg := export.DefaultConfig()
	cfg.Sweep, cfg.Lease = 50*time.Millisecond, time.Second
	svc, err := export.Open(ctx, js, st, noRetention{}, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	state := func(id string) export.Job {
		e, err := jobs.Get(ctx, id)
		require.NoError(t, err)
		var j export.Job
		require.NoError(t, json.Unmarshal(e.Value(), &j))
		return j
	}
	require.Eventually(t, func() bool { return state(retried).State == export.StateReady }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return state(exhausted).State == export.StateError }, 20*time.Second, 20*time.Millisecond)
	assert.Equal(t, int64(1), state(retried).Rows)
	assert.Equal(t, 2, state(retried).Attempts)

	files, err := js.ObjectStore(ctx, event.ObjectsExports)
	require.NoError(t, err)
	b, err := files.GetBytes(ctx, retried+".csv")
	require.NoError(t, err)
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, export.Columns, rows[0])
	assert.Equal(t, "'-cmd|' /C calc'!A0", rows[1][8], "actor_name neutralised")
	assert.Equal(t, "'\t1.2.3.4", rows[1][11], "location neutralised")
	_, err = files.GetInfo(ctx, exhausted+".csv")
	assert.ErrorIs(t, err, jetstream.ErrObjectNotFound)
}

func TestNeutralize(t *testing.T) {
	for in, want := range map[string]string{
		"=SUM(A1)": "'=SUM(A1)", "+1": "'+1", "-1": "'-1", "@x": "'@x", "\tx": "'\tx", "\rx": "'\rx", "\nx": "'\nx",
		"": "", "plain": "plain", "a=b": "a=b", `"quoted"`: `"quoted"`, "1,2;3": "1,2;3",
	} {
		assert.Equal(t, want, export.Neutralize(in), "%q", in)
	}
	// Round trip through encoding/csv: the reader gets "'" + the original back.
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	require.NoError(t, w.Write([]string{export.Neutralize(`=HYPERLINK("http://x","a,b")`)}))
	w.Flush()
	got, err := csv.NewReader(strings.NewReader(b.String())).Read()
	require.NoError(t, err)
	assert.Equal(t, `'=HYPERLINK("http://x","a,b")`, got[0])
}

func TestParseRequestKeepsFilters(t *testing.T) {
	org, f, err := export.ParseRequest([]byte(`{"organization_id":"org_1","range_start":"2026-01-01T00:00:00.000Z",
	  "range_end":"2026-02-01T00:00:00+01:00","actions":["a.b"],"actors":["Ada"],"actor_names":["Bob"],"actor_ids":["u1"],
	  "targets":["team"]}`))
	require.NoError(t, err)
	assert.Equal(t, "org_1", org)
	assert.Equal(t, []string{"a.b"}, f.Actions)
	assert.ElementsMatch(t, []string{"Ada", "Bob"}, f.ActorNames, "actors is the deprecated actor_names")
	assert.Equal(t, []string{"u1"}, f.ActorIDs)
	assert.Equal(t, []string{"team"}, f.TargetTypes)
	assert.Equal(t, time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), f.RangeEnd)
}

// A job whose point the pipeline has not stored waits, each attempt up to StoredWait, and then
// fails (state "error" after its attempts) rather than exporting what happens to be stored.
func TestExportNeverExportsASubset(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	// An acknowledged event no validator has settled.
	_, err := js.Publish(ctx, event.RawSubject(org), []byte("{}"))
	require.NoError(t, err)
	jobs, err := js.KeyValue(ctx, event.BucketExports)
	require.NoError(t, err)
	const id = "audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FA3"
	now := time.Now().UTC()
	raw, _ := json.Marshal(export.Job{
		ID: id, OrganizationID: org, State: export.StatePending, CreatedAt: now, UpdatedAt: now,
		Filter: export.Filter{RangeStart: now.Add(-time.Hour), RangeEnd: now.Add(time.Hour)},
		Stored: &settle.Point{Raw: 1},
	})
	_, err = jobs.Put(ctx, id, raw)
	require.NoError(t, err)

	cfg := export.DefaultConfig()
	cfg.Sweep, cfg.Lease, cfg.StoredWait, cfg.MaxAttempts = 50*time.Millisecond, time.Second, 200*time.Millisecond, 2
	svc, err := export.Open(ctx, js, st, noRetention{}, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	var j export.Job
	require.Eventually(t, func() bool {
		e, err := jobs.Get(ctx, id)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(e.Value(), &j))
		return j.State != export.StatePending
	}, 20*time.Second, 20*time.Millisecond)
	assert.Equal(t, export.StateError, j.State)
	assert.Contains(t, j.Error, "not all stored within 200ms")
	files, err := js.ObjectStore(ctx, event.ObjectsExports)
	require.NoError(t, err)
	_, err = files.GetInfo(ctx, id+".csv")
	assert.ErrorIs(t, err, jetstream.ErrObjectNotFound, "no partial file")
}

// service opens an export service with cfg on js and the shared engine, serving its API routes on
// an echo instance without authentication.
func service(t *testing.T, js jetstream.JetStream, cfg export.Config) (*export.Service, *echo.Echo) {
	t.Helper()
	svc, err := export.Open(context.Background(), js, storetest.Shared(t), noRetention{}, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	svc.Register(e.Group(""))
	return svc, e
}

func create(e *echo.Echo, org string) *httptest.ResponseRecorder {
	body := fmt.Sprintf(`{"organization_id":%q,"range_start":"2020-01-01T00:00:00Z","range_end":"2030-01-01T00:00:00Z"}`, org)
	req := httptest.NewRequest(http.MethodPost, "/audit_logs/exports", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func run(t *testing.T, svc *export.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
}

func jobState(t *testing.T, js jetstream.JetStream, id string) export.Job {
	t.Helper()
	jobs, err := js.KeyValue(context.Background(), event.BucketExports)
	require.NoError(t, err)
	e, err := jobs.Get(context.Background(), id)
	require.NoError(t, err)
	var j export.Job
	require.NoError(t, json.Unmarshal(e.Value(), &j))
	return j
}

// An organization has at most MaxPerOrg exports in progress, counted across replicas (two
// services on one JetStream here); the next is refused with 429 and Retry-After in the WorkOS
// envelope, another organization is not affected, and a finished export gives its slot back.
func TestExportsInProgressAreCappedPerOrganization(t *testing.T) {
	_, js := natstest.New(t)
	cfg := export.DefaultConfig()
	cfg.MaxPerOrg, cfg.Sweep = 2, 50*time.Millisecond
	a, ea := service(t, js, cfg)
	_, eb := service(t, js, cfg) // a second replica, never running jobs
	org, other := storetest.NewOrg(t), storetest.NewOrg(t)

	var ids []string
	for _, e := range []*echo.Echo{ea, eb} {
		r := create(e, org)
		require.Equal(t, 201, r.Code, "%s", r.Body)
		var x struct{ ID string }
		require.NoError(t, json.Unmarshal(r.Body.Bytes(), &x))
		ids = append(ids, x.ID)
	}
	for _, e := range []*echo.Echo{ea, eb} {
		r := create(e, org)
		require.Equal(t, http.StatusTooManyRequests, r.Code, "%s", r.Body)
		assert.Contains(t, r.Body.String(), `"code":"too_many_exports"`)
		assert.Contains(t, r.Body.String(), "LOGBOOK_EXPORT_MAX_PER_ORG")
		assert.Equal(t, "10", r.Header().Get("Retry-After"))
	}
	require.Equal(t, 201, create(eb, other).Code, "another organization has its own slots")

	run(t, a) // the jobs finish and give their slots back
	for _, id := range ids {
		require.Eventually(t, func() bool { return jobState(t, js, id).State == export.StateReady }, 20*time.Second, 20*time.Millisecond)
	}
	for range 2 {
		require.Equal(t, 201, create(eb, org).Code)
	}
}

// The export store is capped: an export that does not fit fails at once with the reason and
// leaves no file, and a request while the store is full is refused with 507.
func TestExportStoreIsCapped(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	st := storetest.Shared(t)
	org := storetest.NewOrg(t)
	at := time.Now().UTC().Add(-time.Hour)
	recs := make([]*event.Record, 10000) // about 3 MB of CSV
	for i := range recs {
		recs[i] = storetest.Record(org, i, at.Add(time.Duration(i)*time.Millisecond))
	}
	require.NoError(t, st.Insert(ctx, "cap:"+org, recs))
	cfg := export.DefaultConfig()
	cfg.StoreMaxBytes = 1 << 20
	svc, e := service(t, js, cfg)
	run(t, svc)

	r := create(e, org)
	require.Equal(t, 201, r.Code, "%s", r.Body)
	var x struct{ ID string }
	require.NoError(t, json.Unmarshal(r.Body.Bytes(), &x))
	require.Eventually(t, func() bool { return jobState(t, js, x.ID).State != export.StatePending }, 20*time.Second, 20*time.Millisecond)
	j := jobState(t, js, x.ID)
	assert.Equal(t, export.StateError, j.State)
	assert.Contains(t, j.Error, "LOGBOOK_EXPORT_STORE_MAX_BYTES")
	assert.Equal(t, 1, j.Attempts, "failed at once, not retried")
	files, err := js.ObjectStore(ctx, event.ObjectsExports)
	require.NoError(t, err)
	_, err = files.GetInfo(ctx, x.ID+".csv")
	assert.ErrorIs(t, err, jetstream.ErrObjectNotFound)

	// Fill the store: a request is then refused at once.
	_, err = files.PutBytes(ctx, "filler", make([]byte, 1<<20-100<<10))
	require.NoError(t, err)
	r = create(e, org)
	require.Equal(t, http.StatusInsufficientStorage, r.Code, "%s", r.Body)
	assert.Contains(t, r.Body.String(), `"code":"export_store_full"`)
}
