package organizations_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
	"github.com/logbookhq/logbook/queryapi/organizations"
)

var quiet = slog.New(slog.DiscardHandler)

// noDeletes stands in for ClickHouse where no row exists to delete.
type noDeletes struct{}

func (noDeletes) DeleteOlderThan(context.Context, string, uint16) error { return nil }

func put(t *testing.T, api *organizations.API, org, body string) *httptest.ResponseRecorder {
	t.Helper()
	e := wire.NewServer(quiet)
	api.Register(e.Group(""))
	req := httptest.NewRequest(http.MethodPut, "/organizations/"+org+"/audit_logs_retention", strings.NewReader(body))
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

// A retention change is recorded before it is made: the record is in the raw stream before the
// setting is in its bucket, and when the record cannot be stored the change is refused with 503
// and not made.
func TestRetentionChangeIsRecordedFirst(t *testing.T) {
	ctx := context.Background()
	ns, js := natstest.New(t)
	ret, err := retention.Watch(ctx, js, quiet)
	require.NoError(t, err)
	t.Cleanup(ret.Close)

	nc, closed, err := natsx.ConnectInProcess(ns, "closed")
	require.NoError(t, err)
	nc.Close()
	api := organizations.New(ret, noDeletes{}, quiet)
	api.UseAudit(selfaudit.New(closed, quiet))
	rec := put(t, api, "org_a", `{"retention_period_in_days":1}`)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code, "%s", rec.Body)
	assert.Contains(t, rec.Body.String(), "audit_unavailable")
	_, set, err := ret.Get(ctx, "org_a")
	require.NoError(t, err)
	assert.False(t, set, "no record, no change")

	api.UseAudit(selfaudit.New(js, quiet))
	rec = put(t, api, "org_a", `{"retention_period_in_days":1}`)
	require.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
	raw, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	record, err := raw.GetLastMsgForSubject(ctx, event.RawSubject(event.SelfAuditOrgID))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, event.BucketRetention)
	require.NoError(t, err)
	setting, err := kv.Get(ctx, "org_a")
	require.NoError(t, err)
	assert.False(t, record.Time.After(setting.Created()), "recorded before the change")
	assert.Contains(t, string(record.Data), `"retention_period_in_days":1`)
}
