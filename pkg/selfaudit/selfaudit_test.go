package selfaudit_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

var quiet = slog.New(slog.DiscardHandler)

// A record is an ordinary event of org_logbook in the raw stream, which the validator's structural
// check accepts, naming the caller and its address.
func TestRecordIsAnEventOfTheSelfAuditOrganization(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	r := selfaudit.New(js, quiet)
	caller := wire.Caller{Key: &apikey.Key{Name: "ci", Prefix: "sk_AbCd"}, ActorType: wire.ActorAPIKey, Name: "ci",
		IP: "203.0.113.9", UserAgent: "curl/8", RequestID: "req_1"}
	err := r.Record(wire.WithCaller(ctx, caller), selfaudit.Entry{
		Action:   selfaudit.RetentionUpdated,
		Targets:  []event.Entity{{ID: "org_a", Type: selfaudit.TargetOrganization}},
		Metadata: map[string]any{"retention_period_in_days": 1},
	})
	require.NoError(t, err)

	st, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(ctx, event.RawSubject(event.SelfAuditOrgID))
	require.NoError(t, err)
	rec, err := validate.ParseRecord(m.Data)
	require.NoError(t, err, "the validator accepts the record")
	assert.Equal(t, "org_logbook", rec.OrganizationID)
	assert.Equal(t, rec.MsgID(), m.Header.Get(jetstream.MsgIDHeader), "deduplicated like any event")
	assert.Equal(t, "logbook.retention.updated", rec.Event.Action)
	assert.Equal(t, event.Entity{ID: "ci", Type: "api_key", Name: "ci", Metadata: map[string]any{"key_prefix": "sk_AbCd"}}, rec.Event.Actor)
	assert.Equal(t, event.Context{Location: "203.0.113.9", UserAgent: "curl/8"}, rec.Event.Context)
	assert.Equal(t, json.Number("1"), rec.Event.Metadata["retention_period_in_days"])
	assert.Equal(t, "req_1", rec.Event.Metadata["request_id"])
	assert.Equal(t, []event.Entity{{ID: "org_a", Type: "organization"}}, rec.Event.Targets)
}

// When the record cannot be stored, Record answers 503: the caller must not make the change.
func TestRecordFailureIs503(t *testing.T) {
	ns, _ := natstest.New(t)
	nc, js, err := natsx.ConnectInProcess(ns, "closed")
	require.NoError(t, err)
	nc.Close()
	err = selfaudit.New(js, quiet).Record(context.Background(), selfaudit.Entry{Action: selfaudit.KeyCreated})
	var we *wire.Error
	require.ErrorAs(t, err, &we)
	assert.Equal(t, http.StatusServiceUnavailable, we.Status)
	assert.Equal(t, "audit_unavailable", we.Code)
}

// The keys command names the operator and the host.
func TestOperatorIsTheActorOfCommands(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.New(t)
	require.NoError(t, selfaudit.New(js, quiet).Record(selfaudit.Operator(ctx, "alice", "build-1"), selfaudit.Entry{Action: selfaudit.KeyRevoked}))
	st, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(ctx, event.RawSubject(event.SelfAuditOrgID))
	require.NoError(t, err)
	rec, err := validate.ParseRecord(m.Data)
	require.NoError(t, err)
	assert.Equal(t, event.Entity{ID: "alice", Type: "operator", Name: "alice"}, rec.Event.Actor)
	assert.Equal(t, "build-1", rec.Event.Context.Location)
}
