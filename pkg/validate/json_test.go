package validate_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/validate"
)

// A body that says two things, or holds bytes that are not UTF-8, is refused as malformed at every
// depth, in names and in values; encoding/json would keep the last duplicate and turn the bad bytes
// into U+FFFD, so the stored record would differ from what was sent.
func TestAmbiguousBodiesAreMalformed(t *testing.T) {
	// One slot per nesting level; each case puts a second value for a name already given there.
	const tmpl = `{"organization_id":"org_1"%s,"event":{"action":"a.b"%s,"occurred_at":"2026-11-27T11:00:00Z",` +
		`"actor":{"id":"u","type":"user"%s,"metadata":{"k":"v"%s}},"targets":[{"id":"t","type":"team"%s}],` +
		`"context":{"location":"1.2.3.4"%s},"metadata":{"m":"1"%s}}%s}`
	body := func(slot int, dup string) string {
		args := make([]any, 8)
		for i := range args {
			args[i] = ""
		}
		if slot >= 0 {
			args[slot] = dup
		}
		return fmt.Sprintf(tmpl, args...)
	}
	_, err := validate.ParseCreateEvent([]byte(body(-1, "")), now)
	require.NoError(t, err, "the template without a duplicate is a good body")
	dups := []struct {
		name string
		slot int
		dup  string
	}{
		{"organization_id", 0, `,"organization_id":"org_2"`},
		{"event", 7, `,"event":{}`},
		{"event.action", 1, `,"action":"c.d"`},
		{"event.actor.id", 2, `,"id":"w"`},
		{"event.actor.metadata key", 3, `,"k":"w"`},
		{"event.targets[0].id", 4, `,"id":"t2"`},
		{"event.context.location", 5, `,"location":"5.6.7.8"`},
		{"event.metadata key", 6, `,"m":"2"`},
		{"event.metadata key, escaped", 6, `,"\u006d":"2"`},
	}
	for _, tt := range dups {
		t.Run("duplicate "+tt.name, func(t *testing.T) {
			b := []byte(body(tt.slot, tt.dup))
			var loose map[string]any
			require.NoError(t, json.Unmarshal(b, &loose), "encoding/json takes it (the last value wins): %s", b)
			_, err := validate.ParseCreateEvent(b, now)
			require.ErrorIs(t, err, validate.ErrMalformed, "%s", b)
			assert.Contains(t, err.Error(), "duplicate")
			_, _, err = validate.ParseBulkLine(b, now)
			assert.ErrorIs(t, err, validate.ErrMalformed)
			assert.ErrorIs(t, validate.CheckJSON(b), validate.ErrMalformed)
		})
	}
	badUTF8 := map[string]string{
		"in a value":              strings.Replace(good, `"Jon Smith"`, "\"Jon \xff Smith\"", 1),
		"in a metadata value":     strings.Replace(good, `"user_01GBTCQ2","attempts"`, "\"user_\xc3\x28\",\"attempts\"", 1),
		"in a metadata key":       strings.Replace(good, `"admin":true`, "\"adm\xe2\x82in\":true", 1),
		"in an unknown field key": strings.Replace(good, `"version":1`, "\"version\":1,\"\xf0\x28\x8c\xbc\":1", 1),
		"a lone surrogate escape": strings.Replace(good, `"Jon Smith"`, `"Jon \ud800 Smith"`, 1),
		"in the organization id":  strings.Replace(good, `org_01EHWNCE74X7JSDV0X3SZ3KJNY`, "org_\xff", 1),
	}
	for name, b := range badUTF8 {
		t.Run("invalid UTF-8 "+name, func(t *testing.T) {
			require.NotEqual(t, good, b)
			var loose map[string]any
			require.NoError(t, json.Unmarshal([]byte(b), &loose), "encoding/json takes it (as U+FFFD)")
			_, err := validate.ParseCreateEvent([]byte(b), now)
			require.ErrorIs(t, err, validate.ErrMalformed)
			assert.Regexp(t, "UTF-8|surrogate", err.Error())
			_, _, err = validate.ParseBulkLine([]byte(b), now)
			assert.ErrorIs(t, err, validate.ErrMalformed)
			assert.ErrorIs(t, validate.CheckJSON([]byte(b)), validate.ErrMalformed)
		})
	}
}

// Numbers keep the digits the producer sent.
func TestNumbersKeepTheirDigits(t *testing.T) {
	body := strings.Replace(good, `"attempts":3`, `"attempts":12345678901234567890.50`, 1)
	req, err := validate.ParseCreateEvent([]byte(body), now)
	require.NoError(t, err)
	assert.Equal(t, json.Number("12345678901234567890.50"), req.Event.Metadata["attempts"])
}

func TestParseBulkLine(t *testing.T) {
	line := strings.Replace(good, `{"organization_id"`, `{"idempotency_key":"k-1","organization_id"`, 1)
	req, key, err := validate.ParseBulkLine([]byte(line), now)
	require.NoError(t, err)
	assert.Equal(t, "k-1", key)
	want, err := validate.ParseCreateEvent([]byte(good), now)
	require.NoError(t, err)
	assert.Equal(t, want, req)

	_, key, err = validate.ParseBulkLine([]byte(good), now)
	require.NoError(t, err)
	assert.Empty(t, key)

	notString := strings.Replace(good, `{"organization_id"`, `{"idempotency_key":7,"organization_id"`, 1)
	_, _, err = validate.ParseBulkLine([]byte(notString), now)
	assert.ErrorIs(t, err, validate.ErrIdempotencyKey)

	twice := strings.Replace(good, `{"organization_id"`, `{"idempotency_key":"a","idempotency_key":"b","organization_id"`, 1)
	_, _, err = validate.ParseBulkLine([]byte(twice), now)
	assert.ErrorIs(t, err, validate.ErrMalformed, "a line naming two keys is refused, not read as the last")

	// The single-event body has no such field.
	_, err = validate.ParseCreateEvent([]byte(line), now)
	assert.Contains(t, fields(err), "idempotency_key")
}

// A record names the schema version it was accepted under, and the validator reads it back.
func TestParseRecordSchemaReference(t *testing.T) {
	req, err := validate.ParseCreateEvent([]byte(good), now)
	require.NoError(t, err)
	for _, ref := range []*event.SchemaRef{nil, {Scope: event.SchemaNone}, {Scope: event.SchemaEnv, Version: 1}, {Scope: event.SchemaOrg, Version: 7}} {
		rec := &event.Record{ID: "01X", OrganizationID: req.OrganizationID, ReceivedAt: now, Event: req.Event, Schema: ref}
		data, err := rec.Marshal()
		require.NoError(t, err)
		back, err := validate.ParseRecord(data)
		require.NoError(t, err)
		assert.Equal(t, rec, back)
	}
	base := `{"id":"01X","organization_id":"org_1","received_at":"2026-11-27T12:00:00Z","event":` +
		`{"action":"a","occurred_at":"2026-11-27T11:00:00Z","actor":{"id":"u","type":"user"},"targets":[],"context":{"location":"x"}}`
	for _, bad := range []string{
		`,"schema":{"scope":"org"}}`, `,"schema":{"scope":"env","version":0}}`, `,"schema":{"scope":"team","version":1}}`,
		`,"schema":{"scope":"none","version":1}}`, `,"schema":"env"}`, `,"schema":{"scope":"env","version":1,"x":1}}`,
	} {
		_, err := validate.ParseRecord([]byte(base + bad))
		assert.Error(t, err, bad)
	}
}
