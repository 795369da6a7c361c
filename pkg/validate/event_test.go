package validate_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/validate"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

const good = `{"organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY",
 "event":{"action":"user.signed_in","occurred_at":"2026-02-02T16:35:39.317Z",
  "actor":{"id":"user_TF4C5938","type":"user","name":"Jon Smith","metadata":{"owner":"user_01GBTCQ2"}},
  "targets":[{"id":"user_TF4C5938","type":"user","name":"Jon Smith","metadata":{"owner":"user_01GBTCQ2"}}],
  "context":{"location":"123.123.123.123","user_agent":"Chrome/104.0.0.0"},
  "metadata":{"owner":"user_01GBTCQ2","attempts":3,"admin":true},"version":1}}`

func TestParseCreateEventAcceptsTheWorkOSFixture(t *testing.T) {
	req, err := validate.ParseCreateEvent([]byte(good), now)
	require.NoError(t, err)
	assert.Equal(t, "org_01EHWNCE74X7JSDV0X3SZ3KJNY", req.OrganizationID)
	assert.Equal(t, "user.signed_in", req.Event.Action)
	assert.Equal(t, time.Date(2026, 2, 2, 16, 35, 39, 317_000_000, time.UTC), req.Event.OccurredAt)
	assert.Equal(t, 1, req.Event.Version)
	assert.Equal(t, json.Number("3"), req.Event.Metadata["attempts"])
	assert.Equal(t, true, req.Event.Metadata["admin"])
	require.Len(t, req.Event.Targets, 1)
	assert.Equal(t, "Chrome/104.0.0.0", req.Event.Context.UserAgent)
}

// The legacy Go SDK (v4) sends empty strings and a null targets list for unset fields.
func TestParseCreateEventAcceptsLegacyGoShapes(t *testing.T) {
	body := `{"organization_id":"org_1","event":{"action":"a","occurred_at":"2026-11-27T05:42:25.982286855+02:00",
	  "actor":{"id":"u","type":"user","name":""},"targets":null,"context":{"location":"1.2.3.4","user_agent":""}}}`
	req, err := validate.ParseCreateEvent([]byte(body), now)
	require.NoError(t, err)
	assert.Empty(t, req.Event.Targets)
	assert.Equal(t, time.Date(2026, 11, 27, 3, 42, 25, 982_000_000, time.UTC), req.Event.OccurredAt, "UTC, truncated to ms")
}

func fields(err error) []string {
	var fe validate.FieldErrors
	if !errors.As(err, &fe) {
		return nil
	}
	out := make([]string, len(fe))
	for i, e := range fe {
		out[i] = e.Field
	}
	return out
}

func TestParseCreateEventFieldErrors(t *testing.T) {
	long := strings.Repeat("x", 501)
	manyKeys := map[string]any{}
	for i := 0; i < 51; i++ {
		manyKeys[fmt.Sprintf("k%d", i)] = "v"
	}
	many, _ := json.Marshal(manyKeys)
	tests := []struct {
		name  string
		patch func(m map[string]any)
		field string
	}{
		{"missing org", func(m map[string]any) { delete(m, "organization_id") }, "organization_id"},
		{"org with a dot", func(m map[string]any) { m["organization_id"] = "org.1" }, "organization_id"},
		{"org with a wildcard", func(m map[string]any) { m["organization_id"] = "org>" }, "organization_id"},
		{"org not a string", func(m map[string]any) { m["organization_id"] = 7 }, "organization_id"},
		{"unknown top-level field", func(m map[string]any) { m["extra"] = 1 }, "extra"},
		{"missing event", func(m map[string]any) { delete(m, "event") }, "event"},
		{"missing action", func(m map[string]any) { ev(m)["action"] = "" }, "event.action"},
		{"bad action", func(m map[string]any) { ev(m)["action"] = "user signed in" }, "event.action"},
		{"bad date", func(m map[string]any) { ev(m)["occurred_at"] = "yesterday" }, "event.occurred_at"},
		{"far future", func(m map[string]any) { ev(m)["occurred_at"] = "2027-01-01T00:00:00Z" }, "event.occurred_at"},
		{"zero version", func(m map[string]any) { ev(m)["version"] = 0 }, "event.version"},
		{"fraction version", func(m map[string]any) { ev(m)["version"] = 1.5 }, "event.version"},
		{"actor missing", func(m map[string]any) { delete(ev(m), "actor") }, "event.actor"},
		{"actor id missing", func(m map[string]any) { delete(ev(m)["actor"].(map[string]any), "id") }, "event.actor.id"},
		{"actor type wrong", func(m map[string]any) { ev(m)["actor"].(map[string]any)["type"] = true }, "event.actor.type"},
		{"targets not array", func(m map[string]any) { ev(m)["targets"] = "x" }, "event.targets"},
		{"target type missing", func(m map[string]any) { ev(m)["targets"] = []any{map[string]any{"id": "t"}} }, "event.targets[0].type"},
		{"context missing", func(m map[string]any) { delete(ev(m), "context") }, "event.context"},
		{"location missing", func(m map[string]any) { ev(m)["context"] = map[string]any{} }, "event.context.location"},
		{"metadata nested", func(m map[string]any) { ev(m)["metadata"] = map[string]any{"a": map[string]any{}} }, "event.metadata.a"},
		{"metadata array", func(m map[string]any) { ev(m)["metadata"] = map[string]any{"a": []any{1}} }, "event.metadata.a"},
		{"metadata value too long", func(m map[string]any) { ev(m)["metadata"] = map[string]any{"a": long} }, "event.metadata.a"},
		{"metadata key too long", func(m map[string]any) { ev(m)["metadata"] = map[string]any{strings.Repeat("k", 41): 1} }, "event.metadata"},
		{"metadata key odd chars", func(m map[string]any) { ev(m)["metadata"] = map[string]any{"a.b": 1} }, "event.metadata"},
		{"metadata too many keys", func(m map[string]any) { ev(m)["metadata"] = json.RawMessage(many) }, "event.metadata"},
		{"actor metadata nested", func(m map[string]any) {
			ev(m)["actor"].(map[string]any)["metadata"] = map[string]any{"a": map[string]any{}}
		}, "event.actor.metadata.a"},
		{"too many targets", func(m map[string]any) {
			ts := make([]any, validate.MaxTargets+1)
			for i := range ts {
				ts[i] = map[string]any{"id": "t", "type": "team"}
			}
			ev(m)["targets"] = ts
		}, "event.targets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(good), &m))
			tt.patch(m)
			body, err := json.Marshal(m)
			require.NoError(t, err)
			_, err = validate.ParseCreateEvent(body, now)
			require.Error(t, err)
			assert.Contains(t, fields(err), tt.field)
		})
	}
}

func ev(m map[string]any) map[string]any { return m["event"].(map[string]any) }

func TestParseCreateEventMalformed(t *testing.T) {
	for _, body := range []string{``, `{`, `[]`, `"x"`, `{"a":1} {"b":2}`, `null`} {
		_, err := validate.ParseCreateEvent([]byte(body), now)
		assert.ErrorIs(t, err, validate.ErrMalformed, body)
	}
}

func TestParseRecordRoundTripsAndChecks(t *testing.T) {
	req, err := validate.ParseCreateEvent([]byte(good), now)
	require.NoError(t, err)
	rec := &event.Record{ID: "01X", OrganizationID: req.OrganizationID, ReceivedAt: now, Event: req.Event}
	data, err := rec.Marshal()
	require.NoError(t, err)
	back, err := validate.ParseRecord(data)
	require.NoError(t, err)
	assert.Equal(t, rec, back, "a record comes back exactly as the gateway wrote it")

	// Future-dated events are judged against the record's receive time, not the clock.
	rec.Event.OccurredAt = now.Add(23 * time.Hour)
	data, _ = rec.Marshal()
	_, err = validate.ParseRecord(data)
	assert.NoError(t, err)
	rec.Event.OccurredAt = now.Add(25 * time.Hour)
	data, _ = rec.Marshal()
	_, err = validate.ParseRecord(data)
	assert.Contains(t, fields(err), "event.occurred_at")

	rec.Event.OccurredAt, rec.Event.Actor.ID = now, ""
	data, _ = rec.Marshal()
	_, err = validate.ParseRecord(data)
	assert.Contains(t, fields(err), "event.actor.id")
	for _, bad := range []string{`{}`, `{"id":"x","organization_id":"o.x","received_at":"2026-01-01T00:00:00Z","event":{}}`, `[`} {
		_, err = validate.ParseRecord([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func FuzzParseCreateEvent(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"organization_id":"o","event":{"metadata":{"a":[1,{"b":null}]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := validate.ParseCreateEvent(body, now)
		if err != nil {
			return
		}
		// Whatever is accepted must be a record the validator accepts again, unchanged.
		rec := &event.Record{ID: "x", OrganizationID: req.OrganizationID, ReceivedAt: now, Event: req.Event}
		data, err := rec.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := validate.ParseRecord(data)
		if err != nil {
			t.Fatalf("accepted body fails re-validation: %v", err)
		}
		if !reflect.DeepEqual(rec, back) {
			t.Fatalf("record changed on the way: %+v != %+v", rec, back)
		}
	})
}
