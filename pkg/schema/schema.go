// Package schema turns the WorkOS action-schema format (JSON Schemas for actor metadata, each
// target type's metadata and the event metadata) into one compiled JSON Schema per version, and
// validates events against it. Tenant-supplied schemas can reach neither files nor the network.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/kaptinlin/jsonschema"

	"github.com/logbookhq/logbook/pkg/event"
)

// Limits on a schema definition.
const (
	MaxDefinitionBytes = 64 << 10
	MaxDepth           = 16
	MaxTargetTypes     = 50
)

// ErrInvalid marks a schema definition Logbook refuses (HTTP 422).
var ErrInvalid = errors.New("invalid schema")

// Target is one allowed target type and the JSON Schema for its metadata.
type Target struct {
	Type     string          `json:"type"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Actor holds the JSON Schema for the actor's metadata.
type Actor struct {
	Metadata json.RawMessage `json:"metadata"`
}

// Definition is the body of a create-schema request.
type Definition struct {
	Actor    *Actor          `json:"actor,omitempty"`
	Targets  []Target        `json:"targets"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Schema is one immutable version of an action's schema, as stored and as the API shows it.
type Schema struct {
	Action string `json:"action"`
	// OrganizationID is set on an organization's own schema, empty on the environment's.
	OrganizationID string    `json:"organization_id,omitempty"`
	Version        int       `json:"version"`
	CreatedAt      time.Time `json:"created_at"`
	Definition
}

// ParseDefinition decodes and checks a create-schema body.
func ParseDefinition(body []byte) (Definition, error) {
	var d Definition
	if len(body) > MaxDefinitionBytes {
		return d, fmt.Errorf("%w: the schema is larger than %d bytes", ErrInvalid, MaxDefinitionBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("%w: %s", ErrInvalid, err.Error())
	}
	if len(d.Targets) == 0 {
		return d, fmt.Errorf("%w: targets must list at least one target type", ErrInvalid)
	}
	if len(d.Targets) > MaxTargetTypes {
		return d, fmt.Errorf("%w: targets may list at most %d types", ErrInvalid, MaxTargetTypes)
	}
	seen := map[string]bool{}
	for i, t := range d.Targets {
		if t.Type == "" || len(t.Type) > 128 {
			return d, fmt.Errorf("%w: targets[%d].type is required (at most 128 characters)", ErrInvalid, i)
		}
		if seen[t.Type] {
			return d, fmt.Errorf("%w: target type %q is listed twice", ErrInvalid, t.Type)
		}
		seen[t.Type] = true
		if err := checkJSONSchema(fmt.Sprintf("targets[%d].metadata", i), t.Metadata); err != nil {
			return d, err
		}
	}
	if d.Actor != nil {
		if len(d.Actor.Metadata) == 0 || string(d.Actor.Metadata) == "null" {
			return d, fmt.Errorf("%w: actor.metadata must be an object", ErrInvalid)
		}
		if err := checkJSONSchema("actor.metadata", d.Actor.Metadata); err != nil {
			return d, err
		}
	}
	if err := checkJSONSchema("metadata", d.Metadata); err != nil {
		return d, err
	}
	if _, err := Compile(d); err != nil {
		return d, err
	}
	return d, nil
}

// checkJSONSchema refuses a JSON Schema that is not an object, nests deeper than MaxDepth, or
// references anything outside itself ($ref to files or URLs, $schema other than draft 2020-12).
func checkJSONSchema(field string, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, err.Error())
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("%w: %s must be a JSON Schema object", ErrInvalid, field)
	}
	return walk(field, v, 0)
}

func walk(field string, v any, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: %s nests deeper than %d levels", ErrInvalid, field, MaxDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			switch k {
			case "$ref", "$dynamicRef", "$recursiveRef":
				s, _ := child.(string)
				if !strings.HasPrefix(s, "#") {
					return fmt.Errorf("%w: %s: %s may only point inside the schema (\"#...\")", ErrInvalid, field, k)
				}
			case "$id", "$anchor", "$dynamicAnchor":
				return fmt.Errorf("%w: %s: %s is not allowed", ErrInvalid, field, k)
			case "$schema":
				if s, _ := child.(string); s != "https://json-schema.org/draft/2020-12/schema" {
					return fmt.Errorf("%w: %s: only the 2020-12 $schema is supported", ErrInvalid, field)
				}
			}
			if err := walk(field, child, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, child := range x {
			if err := walk(field, child, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Compiled is a schema version ready to validate events. Safe for concurrent use.
type Compiled struct {
	schema *jsonschema.Schema
}

// Compile builds the JSON Schema an event must satisfy under d: actor metadata, each target's
// metadata by its type (a target of a type the schema does not list is refused), and the event's
// metadata. Absent metadata is validated as an empty object, so "required" keys are enforced.
func Compile(d Definition) (*Compiled, error) {
	orEmpty := func(raw json.RawMessage) json.RawMessage {
		if len(raw) == 0 || string(raw) == "null" {
			return json.RawMessage(`{}`)
		}
		return raw
	}
	variants := make([]any, 0, len(d.Targets))
	for _, t := range d.Targets {
		variants = append(variants, map[string]any{
			"type":     "object",
			"required": []string{"type"},
			"properties": map[string]any{
				"type":     map[string]any{"const": t.Type},
				"metadata": orEmpty(t.Metadata),
			},
		})
	}
	var actorMeta json.RawMessage
	if d.Actor != nil {
		actorMeta = d.Actor.Metadata
	}
	doc := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"actor": map[string]any{
				"type":       "object",
				"properties": map[string]any{"metadata": orEmpty(actorMeta)},
			},
			"targets":  map[string]any{"type": "array", "items": map[string]any{"anyOf": variants}},
			"metadata": orEmpty(d.Metadata),
		},
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, err.Error())
	}
	c := jsonschema.NewCompiler()
	c.Loaders = map[string]func(string) (io.ReadCloser, error){} // no file or network loading, ever
	s, err := c.Compile(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, err.Error())
	}
	return &Compiled{schema: s}, nil
}

// InstanceError is one schema violation, as WorkOS reports it: a JSON pointer into the event.
type InstanceError struct {
	InstancePath string `json:"instancePath"`
	Message      string `json:"message,omitempty"`
}

// Validate returns the schema violations of ev, or nil when it conforms.
func (c *Compiled) Validate(ev *event.Event) []InstanceError {
	inst := map[string]any{
		"actor":    map[string]any{"metadata": orEmptyMap(ev.Actor.Metadata)},
		"metadata": orEmptyMap(ev.Metadata),
	}
	targets := make([]any, len(ev.Targets))
	for i, t := range ev.Targets {
		targets[i] = map[string]any{"type": t.Type, "metadata": orEmptyMap(t.Metadata)}
	}
	inst["targets"] = targets
	raw, err := json.Marshal(inst)
	if err != nil {
		return []InstanceError{{InstancePath: "", Message: err.Error()}}
	}
	res := c.schema.ValidateJSON(raw)
	if res.IsValid() {
		return nil
	}
	return collect(res.ToList(true))
}

// collect turns the library's evaluation tree (each node's instance location is relative to its
// parent's) into the deepest failing locations, one message per path.
func collect(root *jsonschema.List) []InstanceError {
	byPath := map[string]string{}
	var walk func(l *jsonschema.List, base string)
	walk = func(l *jsonschema.List, base string) {
		path := base + l.InstanceLocation
		deeper := false
		for i := range l.Details {
			if !l.Details[i].Valid {
				deeper = true
				walk(&l.Details[i], path)
			}
		}
		if deeper || l.Valid {
			return
		}
		for _, msg := range l.Errors {
			if _, ok := byPath[path]; !ok {
				byPath[path] = msg
			}
		}
		if _, ok := byPath[path]; !ok {
			byPath[path] = "does not match the schema"
		}
	}
	walk(root, "")
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	out := make([]InstanceError, 0, len(paths))
	for _, p := range paths {
		out = append(out, InstanceError{InstancePath: p, Message: byPath[p]})
	}
	return out
}

func orEmptyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
