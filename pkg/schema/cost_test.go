package schema_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
)

// refChain is the schema of the issue: each definition applies the previous one twice, so
// evaluating d<n> costs 2^n evaluations of d0 for any event. base is how a $ref names the
// metadata schema's root: "#" (the schema itself, as JSON Schema means it) or the path of the
// metadata schema inside the document Logbook used to build around it ("#/properties/metadata").
func refChain(n int, base string) string {
	defs := []string{`"d0":{"type":"object"}`}
	for i := 1; i <= n; i++ {
		defs = append(defs, fmt.Sprintf(`"d%d":{"allOf":[{"$ref":"%s/$defs/d%d"},{"$ref":"%s/$defs/d%d"}]}`, i, base, i-1, base, i-1))
	}
	return fmt.Sprintf(`{"targets":[{"type":"team"}],"metadata":{"$defs":{%s},"$ref":"%s/$defs/d%d"}}`,
		strings.Join(defs, ","), base, n)
}

// Registration refuses every schema whose evaluation is not bounded, with a message that says why.
// None of these is ever evaluated: the refusal is static, so even 2^30 is refused at once.
func TestUnboundedSchemasAreRefusedAtRegistration(t *testing.T) {
	tests := []struct {
		name, body, why string
	}{
		{"2^30 $ref chain", refChain(30, "#"), "too costly"},
		{"2^16 $ref chain", refChain(16, "#"), "too costly"},
		{"2^30 chain through the old document paths", refChain(30, "#/properties/metadata"), "does not point to a schema inside"},
		{"wide anyOf of refs, nested", `{"targets":[{"type":"team"}],"metadata":{"$defs":{
			"a":{"anyOf":[{"type":"string"},{"type":"number"},{"type":"boolean"},{"minLength":1},{"maxLength":9},{"enum":[1,2]},{"const":3},{"pattern":"x"},{"format":"email"},{"not":{}}]},
			"b":{"anyOf":[{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"},{"$ref":"#/$defs/a"}]},
			"c":{"anyOf":[{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"},{"$ref":"#/$defs/b"}]},
			"d":{"anyOf":[{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"},{"$ref":"#/$defs/c"}]}},
			"additionalProperties":{"$ref":"#/$defs/d"}}}`, "too costly"},
		{"$ref cycle", `{"targets":[{"type":"team"}],"metadata":{"$defs":{"a":{"allOf":[{"$ref":"#/$defs/b"}]},"b":{"anyOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"}}`, "cycle"},
		{"self reference", `{"targets":[{"type":"team"}],"metadata":{"allOf":[{"$ref":"#"}]}}`, "cycle"},
		{"pattern too long", `{"targets":[{"type":"team"}],"metadata":{"properties":{"a":{"pattern":"` + strings.Repeat("a", 2000) + `"}}}}`, "pattern"},
		{"pattern too large once compiled", `{"targets":[{"type":"team"}],"metadata":{"properties":{"a":{"pattern":"^(\\w{1,1000}){1,100}$"}}}}`, "pattern"},
		{"patternProperties key too large once compiled", `{"targets":[{"type":"team"}],"metadata":{"patternProperties":{"^([a-z]{1,1000}){1,100}$":{"type":"string"}}}}`, "pattern"},
		{"invalid pattern", `{"targets":[{"type":"team"}],"metadata":{"properties":{"a":{"pattern":"(?<=x)a"}}}}`, "pattern"},
		{"huge number", `{"targets":[{"type":"team"}],"metadata":{"properties":{"a":{"multipleOf":0.` + strings.Repeat("1", 5000) + `}}}}`, "number"},
		{"dynamic ref", `{"targets":[{"type":"team"}],"metadata":{"$dynamicRef":"#"}}`, "$dynamicRef"},
		{"content schema", `{"targets":[{"type":"team"}],"metadata":{"properties":{"a":{"contentMediaType":"application/json","contentSchema":{"type":"array"}}}}}`, "contentMediaType is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schema.ParseDefinition([]byte(tt.body))
			require.ErrorIs(t, err, schema.ErrInvalid)
			assert.Contains(t, err.Error(), tt.why)
		})
	}
}

// A $ref is resolved within the JSON Schema it is written in ("#" is that schema), as JSON Schema
// means it, so definitions shared through $defs work.
func TestLocalRefsResolveWithinTheirOwnSchema(t *testing.T) {
	c := compile(t, `{"targets":[{"type":"team","metadata":{"$defs":{"plan":{"enum":["free","pro"]}},"properties":{"plan":{"$ref":"#/$defs/plan"}}}}],
		"metadata":{"$defs":{"id":{"type":"string","pattern":"^[a-z]+_[0-9]+$"}},"properties":{"user":{"$ref":"#/$defs/id"},"team":{"$ref":"#/$defs/id"}}}}`)
	ev := okEvent()
	ev.Metadata = map[string]any{"user": "user_1", "team": "team_2"}
	assert.Nil(t, c.Validate(ev))
	ev.Metadata["team"] = "Team 2"
	ev.Targets[0].Metadata["plan"] = "gold"
	assert.Equal(t, []string{"/metadata/team", "/targets/0/metadata/plan"}, paths(c.Validate(ev)))
}

// Numbers that would cost the validator's exact arithmetic seconds (1e1000000 is a 3.3 Mbit
// integer) are refused before any schema keyword sees them.
func TestHostileNumbersInEventsAreRefused(t *testing.T) {
	c := compile(t, `{"targets":[{"type":"team"}],"metadata":{"properties":{"n":{"type":"number","maximum":5,"multipleOf":0.5}}}}`)
	for _, n := range []string{"1e1000000", "1e-1000000", "0." + strings.Repeat("3", 100)} {
		ev := okEvent()
		ev.Metadata = map[string]any{"n": json.Number(n)}
		errs := c.Validate(ev)
		require.Len(t, errs, 1, n)
		assert.Equal(t, "/metadata/n", errs[0].InstancePath)
		assert.Contains(t, errs[0].Message, "number")
	}
}

// Schemas as people write them for audit metadata are accepted.
func TestRealisticSchemasAreAccepted(t *testing.T) {
	for name, body := range realisticSchemas() {
		t.Run(name, func(t *testing.T) {
			_, err := schema.ParseDefinition([]byte(body))
			require.NoError(t, err)
		})
	}
}

func paths(errs []schema.InstanceError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.InstancePath)
	}
	return out
}

var _ = event.Event{}
