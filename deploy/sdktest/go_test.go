package sdktest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/workos/workos-go/v4/pkg/auditlogs"
	"github.com/workos/workos-go/v4/pkg/workos_errors"
	"github.com/workos/workos-go/v7"
)

func ptr[T any](v T) *T { return &v }

// jsonSchema is the JSON-Schema form the Go SDK sends verbatim: {"type":"object","properties":…}.
func jsonSchema(props map[string]string) map[string]any {
	p := map[string]any{}
	for k, typ := range props {
		p[k] = map[string]any{"type": typ}
	}
	return map[string]any{"type": "object", "properties": p}
}

func goEvent(action string, n int, version *int) *workos.AuditLogEvent {
	return &workos.AuditLogEvent{
		Action:     action,
		Version:    version,
		OccurredAt: time.Now().UTC().Format(time.RFC3339Nano), // 0–9 fractional digits, as Go prints them
		Actor: &workos.AuditLogEventActor{ID: "user_" + string(rune('0'+n)), Type: "user", Name: ptr("Jon Smith"),
			Metadata: map[string]any{"role": "admin"}},
		Targets: []*workos.AuditLogEventTarget{{ID: "team_01GBNJD4MKHVKJGEWK42JNMBGS", Type: "team",
			Metadata: map[string]any{"plan": "pro"}}},
		Context:  &workos.AuditLogEventContext{Location: "123.123.123.123", UserAgent: ptr("Chrome/104.0.0.0")},
		Metadata: map[string]any{"attempts": n},
	}
}

// Every audit-log method of the generated Go SDK (v7, wire-identical to v10).
func TestGoSDKv7(t *testing.T) {
	ctx := context.Background()
	client := workos.NewClient(apiKey, workos.WithBaseURL(baseURL), workos.WithMaxRetries(0))
	al := client.AuditLogs()
	org := uniqueOrg("go_v7")
	action := "user.signed_in_go_v7"

	schema, err := al.CreateSchema(ctx, action, &workos.AuditLogsCreateSchemaParams{
		Actor:    &workos.AuditLogSchemaActor{Metadata: jsonSchema(map[string]string{"role": "string"})},
		Targets:  []*workos.AuditLogSchemaTarget{{Type: "team", Metadata: jsonSchema(map[string]string{"plan": "string"})}},
		Metadata: jsonSchema(map[string]string{"attempts": "number"}),
	})
	require.NoError(t, err)
	assert.Equal(t, "audit_log_schema", schema.Object)
	assert.Equal(t, 1, schema.Version)
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, schema.CreatedAt)
	require.Len(t, schema.Targets, 1)
	assert.Equal(t, "team", schema.Targets[0].Type)

	first := &workos.AuditLogsCreateEventParams{OrganizationID: org, Event: goEvent(action, 1, ptr(1))}
	res, err := al.CreateEvent(ctx, first, workos.WithIdempotencyKey("go-v7-key-1"))
	require.NoError(t, err)
	assert.True(t, res.Success)
	res, err = al.CreateEvent(ctx, first, workos.WithIdempotencyKey("go-v7-key-1")) // a retry
	require.NoError(t, err)
	assert.True(t, res.Success)
	_, err = al.CreateEvent(ctx, &workos.AuditLogsCreateEventParams{OrganizationID: org, Event: goEvent(action, 2, nil)})
	require.NoError(t, err, "version omitted means version 1")

	// A schema violation: 400 invalid_audit_log_event (a plain *APIError in this SDK).
	bad := goEvent(action, 3, ptr(1))
	bad.Metadata = map[string]any{"attempts": "three"}
	_, err = al.CreateEvent(ctx, &workos.AuditLogsCreateEventParams{OrganizationID: org, Event: bad})
	var apiErr *workos.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	assert.Equal(t, "invalid_audit_log_event", apiErr.Code)
	assert.NotEmpty(t, apiErr.RequestID)
	// A structural problem: 422.
	broken := goEvent(action, 4, ptr(1))
	broken.OccurredAt = "yesterday"
	_, err = al.CreateEvent(ctx, &workos.AuditLogsCreateEventParams{OrganizationID: org, Event: broken})
	var unprocessable *workos.UnprocessableEntityError
	require.ErrorAs(t, err, &unprocessable)
	// The key reused with another body: 409 idempotency_error.
	_, err = al.CreateEvent(ctx, &workos.AuditLogsCreateEventParams{OrganizationID: org, Event: goEvent(action, 5, ptr(1))},
		workos.WithIdempotencyKey("go-v7-key-1"))
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, http.StatusConflict, apiErr.StatusCode)
	assert.Equal(t, "idempotency_error", apiErr.Code)
	// A wrong key.
	_, err = workos.NewClient("sk_wrong_0123456789abcdef", workos.WithBaseURL(baseURL), workos.WithMaxRetries(0)).
		AuditLogs().CreateEvent(ctx, first)
	var authErr *workos.AuthenticationError
	require.ErrorAs(t, err, &authErr)

	// A second version, then the lists.
	_, err = al.CreateSchema(ctx, action, &workos.AuditLogsCreateSchemaParams{Targets: []*workos.AuditLogSchemaTarget{{Type: "team"}}})
	require.NoError(t, err)
	var versions []int
	it := al.ListActionSchemas(ctx, action, &workos.AuditLogsListActionSchemasParams{PaginationParams: workos.PaginationParams{Limit: ptr(1)}})
	for it.Next() {
		versions = append(versions, it.Current().Version)
	}
	require.NoError(t, it.Err())
	assert.Equal(t, []int{2, 1}, versions, "newest first, page by page until after is null")
	var found *workos.AuditLogActionJSON
	actions := al.ListActions(ctx, &workos.AuditLogsListActionsParams{})
	for actions.Next() {
		if a := actions.Current(); a.Name == action {
			found = a
		}
	}
	require.NoError(t, actions.Err())
	require.NotNil(t, found, "ListActions lists the action")
	assert.Equal(t, "audit_log_action", found.Object)
	assert.Equal(t, 2, found.Schema.Version, "with its latest schema")
	missing := al.ListActionSchemas(ctx, "no.such_action", nil)
	assert.False(t, missing.Next())
	var notFound *workos.NotFoundError
	assert.ErrorAs(t, missing.Err(), &notFound)

	// Export: pending, then ready with a link that needs no key.
	exp, err := al.CreateExport(ctx, &workos.AuditLogsCreateExportParams{
		OrganizationID: org,
		RangeStart:     time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		RangeEnd:       time.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		Actions:        []string{action},
		ActorIDs:       []string{"user_1", "user_2"},
	})
	require.NoError(t, err)
	assert.Equal(t, workos.AuditLogExportJSONState("pending"), exp.State)
	assert.Nil(t, exp.URL)
	got := pollGoExport(t, al, exp.ID)
	require.NotNil(t, got.URL)
	csvRows := download(t, *got.URL)
	containsAll(t, column(t, csvRows, "actor_id"), "user_1", "user_2") // requested without waiting for the events to be stored
	rows, distinct := storedEvents(t, org, 2)
	assert.Equal(t, uint64(2), rows, "two events, the retry stored once")
	assert.Equal(t, uint64(2), distinct)
	_, err = al.GetExport(ctx, "audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FAV")
	assert.ErrorAs(t, err, &notFound)
	_, err = al.CreateExport(ctx, &workos.AuditLogsCreateExportParams{OrganizationID: org, RangeStart: "last week", RangeEnd: "now"})
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "invalid_audit_log_export_range_date", apiErr.Code)

	// Retention.
	ret, err := al.GetOrganizationAuditLogsRetention(ctx, org)
	require.NoError(t, err)
	assert.Nil(t, ret.RetentionPeriodInDays, "no retention set yet")
	ret, err = al.UpdateOrganizationAuditLogsRetention(ctx, org, &workos.AuditLogsUpdateOrganizationAuditLogsRetentionParams{RetentionPeriodInDays: 365})
	require.NoError(t, err)
	require.NotNil(t, ret.RetentionPeriodInDays)
	assert.Equal(t, 365, *ret.RetentionPeriodInDays)
	ret, err = al.GetOrganizationAuditLogsRetention(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, 365, *ret.RetentionPeriodInDays)
	assert.Equal(t, uint16(365), logbookRetention(t, org))
	_, err = al.UpdateOrganizationAuditLogsRetention(ctx, org, &workos.AuditLogsUpdateOrganizationAuditLogsRetentionParams{RetentionPeriodInDays: 0})
	assert.ErrorAs(t, err, &unprocessable)
	conf, err := client.Organizations().GetAuditLogConfiguration(ctx, org)
	require.NoError(t, err)
	assert.Equal(t, org, conf.OrganizationID)
	assert.Equal(t, 365, conf.RetentionPeriodInDays)
	assert.Equal(t, workos.AuditLogConfigurationState("active"), conf.State)
}

func pollGoExport(t *testing.T, al *workos.AuditLogService, id string) *workos.AuditLogExportJSON {
	t.Helper()
	var got *workos.AuditLogExportJSON
	require.Eventually(t, func() bool {
		var err error
		got, err = al.GetExport(context.Background(), id)
		require.NoError(t, err)
		return got.State != "pending"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, workos.AuditLogExportJSONState("ready"), got.State)
	return got
}

// Every method of the legacy Go package (v4 pkg/auditlogs): events and exports.
func TestGoSDKv4Legacy(t *testing.T) {
	ctx := context.Background()
	org := uniqueOrg("go_v4")
	action := "user.signed_in_go_v4"
	// The legacy package cannot create schemas; the generated client does it.
	_, err := workos.NewClient(apiKey, workos.WithBaseURL(baseURL)).AuditLogs().CreateSchema(ctx, action,
		&workos.AuditLogsCreateSchemaParams{
			Targets:  []*workos.AuditLogSchemaTarget{{Type: "team"}},
			Metadata: jsonSchema(map[string]string{"attempts": "number"}),
		})
	require.NoError(t, err)

	client := &auditlogs.Client{
		APIKey:          apiKey,
		EventsEndpoint:  baseURL + "/audit_logs/events",
		ExportsEndpoint: baseURL + "/audit_logs/exports",
	}
	ev := func(actor string, meta map[string]any) auditlogs.Event {
		return auditlogs.Event{ // sends "name": "", "user_agent": "", no version
			Action:     action,
			OccurredAt: time.Now().In(time.FixedZone("CEST", 2*3600)), // an offset, as time.Time marshals it
			Actor:      auditlogs.Actor{ID: actor, Type: "user"},
			Targets:    []auditlogs.Target{{ID: "team_1", Type: "team"}},
			Context:    auditlogs.Context{Location: "1.2.3.4"},
			Metadata:   meta,
		}
	}
	first := auditlogs.CreateEventOpts{OrganizationID: org, Event: ev("legacy_1", map[string]any{"attempts": 1}), IdempotencyKey: "legacy-key-1"}
	require.NoError(t, client.CreateEvent(ctx, first))
	require.NoError(t, client.CreateEvent(ctx, first), "a retry with the same key")
	require.NoError(t, client.CreateEvent(ctx, auditlogs.CreateEventOpts{OrganizationID: org, Event: ev("legacy_2", nil)}))
	// Targets left nil are sent as null, which Logbook accepts as none… but this action's schema
	// lists a target type, and an empty list is fine too.
	noTargets := ev("legacy_3", nil)
	noTargets.Targets = nil
	require.NoError(t, client.CreateEvent(ctx, auditlogs.CreateEventOpts{OrganizationID: org, Event: noTargets}))

	err = client.CreateEvent(ctx, auditlogs.CreateEventOpts{OrganizationID: org, Event: ev("legacy_4", map[string]any{"attempts": "four"})})
	var httpErr workos_errors.HTTPError
	require.True(t, errors.As(err, &httpErr), "%T %v", err, err)
	assert.Equal(t, http.StatusBadRequest, httpErr.Code)
	assert.Equal(t, "invalid_audit_log_event", httpErr.ErrorCode)
	assert.NotEmpty(t, httpErr.RequestID)
	err = client.CreateEvent(ctx, auditlogs.CreateEventOpts{OrganizationID: org, Event: auditlogs.Event{Action: action}})
	require.True(t, errors.As(err, &httpErr), "%T %v", err, err)
	assert.Equal(t, http.StatusUnprocessableEntity, httpErr.Code)
	assert.NotEmpty(t, httpErr.FieldErrors, "422 errors decode as field errors")

	exp, err := client.CreateExport(ctx, auditlogs.CreateExportOpts{
		OrganizationID: org,
		RangeStart:     time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		RangeEnd:       time.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		Actors:         []string{""}, // refused: actor names are not empty
	})
	require.Error(t, err)
	exp, err = client.CreateExport(ctx, auditlogs.CreateExportOpts{
		OrganizationID: org,
		RangeStart:     time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		RangeEnd:       time.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		ActorIds:       []string{"legacy_1", "legacy_3"},
	})
	require.NoError(t, err)
	assert.Equal(t, auditlogs.AuditLogExportState("pending"), exp.State)
	var got auditlogs.AuditLogExport
	require.Eventually(t, func() bool {
		got, err = client.GetExport(ctx, auditlogs.GetExportOpts{ExportID: exp.ID})
		require.NoError(t, err)
		return got.State != "pending"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, auditlogs.AuditLogExportState("ready"), got.State)
	csvRows := download(t, got.URL)
	containsAll(t, column(t, csvRows, "actor_id"), "legacy_1", "legacy_3") // requested without waiting for the events to be stored
	rows, distinct := storedEvents(t, org, 3)
	assert.Equal(t, uint64(3), rows)
	assert.Equal(t, uint64(3), distinct)
}
