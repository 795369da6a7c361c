package schema_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
)

// everyKeyword is a metadata schema using every keyword pkg/schema accepts (TestEveryKeywordIsUsed
// keeps it so), patternProperties first among them: the keyword of the original incident.
const everyKeyword = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$comment": "every keyword Logbook evaluates",
  "title": "metadata", "description": "all of them", "deprecated": false, "readOnly": false, "writeOnly": false,
  "examples": [{"plan": "pro"}], "default": {},
  "type": "object",
  "patternProperties": {"^x_[a-z]+$": {"type": "string", "maxLength": 10}, "^n_": {"type": "number"}},
  "$defs": {
    "plan": {"enum": ["free", "team", "pro"]},
    "id": {"type": "string", "pattern": "^[a-z]+_[0-9]+$", "minLength": 3, "maxLength": 40},
    "count": {"type": "integer", "minimum": 0, "maximum": 1000, "multipleOf": 1}
  },
  "properties": {
    "plan": {"$ref": "#/$defs/plan"},
    "user": {"$ref": "#/$defs/id"},
    "attempts": {"$ref": "#/$defs/count"},
    "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "email": {"type": "string", "format": "email"},
    "mode": {"const": "strict"},
    "flag": {"type": "boolean"},
    "kind": {"anyOf": [{"type": "string"}, {"type": "number"}]},
    "code": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 5}]},
    "note": {"not": {"type": "null"}},
    "tags": {"type": "array", "items": {"type": "string"}, "prefixItems": [{"const": "a"}], "contains": {"const": "b"},
      "minContains": 1, "maxContains": 2, "minItems": 1, "maxItems": 5, "uniqueItems": true, "unevaluatedItems": false}
  },
  "additionalProperties": {"type": ["string", "number", "boolean"]},
  "propertyNames": {"maxLength": 40},
  "required": ["plan"],
  "dependentRequired": {"refund": ["amount"]},
  "dependentSchemas": {"amount": {"required": ["currency"]}},
  "if": {"properties": {"plan": {"const": "pro"}}},
  "then": {"required": ["user"]},
  "else": {"not": {"required": ["seats"]}},
  "allOf": [{"minProperties": 1}, {"maxProperties": 50}],
  "unevaluatedProperties": true
}`

func everyKeywordDefinition() string {
	return fmt.Sprintf(`{"actor":{"metadata":%s},"targets":[{"type":"team","metadata":%s},{"type":"user"}],"metadata":%s}`,
		everyKeyword, everyKeyword, everyKeyword)
}

// The schema above uses every keyword pkg/schema accepts, so the race test covers each of them.
func TestEveryKeywordIsUsed(t *testing.T) {
	var raw any
	require.NoError(t, json.Unmarshal([]byte(everyKeyword), &raw))
	used := map[string]bool{}
	var walk func(v any, names bool)
	walk = func(v any, names bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, child := range x {
				if !names {
					used[k] = true
				}
				switch k {
				case "enum", "const", "examples", "default", "required", "dependentRequired", "type":
					continue // values, not schemas
				}
				isNames := !names && (k == "properties" || k == "patternProperties" || k == "$defs" || k == "dependentSchemas")
				walk(child, isNames)
			}
		case []any:
			for _, child := range x {
				walk(child, false)
			}
		}
	}
	walk(raw, false)
	var keys []string
	for k := range used {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	assert.Equal(t, schema.Keywords(), keys)
}

// metadataFor returns the i-th of a varied set of metadata objects: conforming ones and ones that
// break each kind of keyword.
func metadataFor(i int) map[string]any {
	n := func(s string) json.Number { return json.Number(s) }
	variants := []map[string]any{
		{"plan": "pro", "user": "user_1", "attempts": n("3"), "x_tag": "short", "n_score": n("1.5")},
		{"plan": "free", "ratio": n("0.5"), "email": "a@example.com", "mode": "strict", "flag": true, "kind": n("2"), "code": "abc"},
		{"plan": "gold"},                                    // enum
		{"plan": "pro"},                                     // if/then: user required
		{"plan": "team", "user": "User 1"},                  // pattern
		{"plan": "team", "attempts": n("1001")},             // maximum
		{"plan": "team", "x_tag": "much too long for it"},   // patternProperties
		{"plan": "team", "n_score": "high"},                 // patternProperties type
		{"plan": "team", "refund": true},                    // dependentRequired
		{"plan": "team", "amount": n("3")},                  // dependentSchemas
		{"plan": "free", "seats": n("3")},                   // else/not
		{"plan": "team", "code": "abcd"},                    // oneOf
		{"plan": "team", "ratio": n("1")},                   // exclusiveMaximum
		{"plan": "team", "mode": "lax"},                     // const
		{},                                                  // required
		{"plan": "team", "tags": "not-an-array", "z": true}, // items keywords on a string: type
	}
	m := variants[i%len(variants)]
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func eventFor(i int) *event.Event {
	return &event.Event{
		Action:   "doc.updated",
		Actor:    event.Entity{ID: "u", Type: "user", Metadata: metadataFor(i)},
		Targets:  []event.Entity{{ID: "t", Type: "team", Metadata: metadataFor(i)}, {ID: "u2", Type: "user"}},
		Metadata: metadataFor(i),
	}
}

// Many goroutines validate many events against one compiled schema at once (the incident: 640
// concurrent events against a patternProperties schema killed the process with "concurrent map
// read and map write" inside kaptinlin/jsonschema v0.9.8). Each result must equal the one found
// alone. Run under -race.
func TestConcurrentValidationIsRaceFree(t *testing.T) {
	c := compile(t, everyKeywordDefinition())
	const goroutines, perGoroutine = 64, 10
	want := make([][]schema.InstanceError, goroutines*perGoroutine)
	valid := 0
	for i := range want {
		want[i] = c.Validate(eventFor(i))
		if want[i] == nil {
			valid++
		}
	}
	require.Greater(t, valid, 0, "some events conform")
	require.Less(t, valid, len(want), "some events break the schema")

	got := make([][]schema.InstanceError, len(want))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for j := range perGoroutine {
				i := g*perGoroutine + j
				got[i] = c.Validate(eventFor(i))
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range want {
		assert.Equal(t, want[i], got[i], "event %d", i)
	}
}
