// Package schema turns the WorkOS action-schema format (JSON Schemas for actor metadata, each
// target type's metadata and the event metadata) into compiled versions, keeps them in a registry
// shared by every replica, and validates events against them. Tenant-supplied schemas can reach
// neither files nor the network, cost a bounded amount of work per event (MaxCost, checked when
// they are registered), and cannot crash the process (Validate recovers).
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kaptinlin/jsonschema"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
)

// Limits on a schema definition.
const (
	MaxDefinitionBytes = 64 << 10
	MaxDepth           = 16
	MaxTargetTypes     = 50
)

// ErrInvalid marks a schema definition Logbook refuses (HTTP 422 invalid_schema).
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

// Schema is one version of an action's schema, as stored and as the API shows it. Its definition
// never changes; an operator may retire it (Registry.Retire).
type Schema struct {
	Action string `json:"action"`
	// OrganizationID is set on an organization's own schema, empty on the environment's.
	OrganizationID string    `json:"organization_id,omitempty"`
	Version        int       `json:"version"`
	CreatedAt      time.Time `json:"created_at"`
	Definition
	// Retired is set once the version no longer applies to new events.
	Retired *Retirement `json:"retired,omitempty"`
}

// Retirement records who retired a version, when and why. A version stored by an earlier release
// that this release refuses is shown retired by "logbook", with the refusal as the reason (that
// record lives in memory only, until an operator retires the version).
type Retirement struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

// ParseDefinition decodes and checks a create-schema body: its shape, each JSON Schema's keywords
// and limits, and the worst-case cost of validating an event against it (see MaxCost).
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
	}
	if d.Actor != nil && (len(d.Actor.Metadata) == 0 || string(d.Actor.Metadata) == "null") {
		return d, fmt.Errorf("%w: actor.metadata must be an object", ErrInvalid)
	}
	if _, err := Compile(d); err != nil {
		return d, err
	}
	return d, nil
}

// Compiled is a schema version ready to validate events: one compiled JSON Schema per part of the
// definition, each its own document (so "#" in a $ref is that schema). Safe for concurrent use.
type Compiled struct {
	actor   *jsonschema.Schema            // nil: any actor metadata
	meta    *jsonschema.Schema            // nil: any event metadata
	targets map[string]*jsonschema.Schema // by target type; nil value: any metadata
	types   []string                      // the listed target types, for messages
	cost    int64
	id      Schema // the version this is, when it came from a registry (zero otherwise)
	log     *slog.Logger
}

// Cost is the worst-case number of evaluation steps of one event against this schema (see
// MaxCost); the validation time of an event is bounded by it.
func (c *Compiled) Cost() int64 { return c.cost }

// OrganizationID, Action and Version name the registry version c was loaded from ("" for the
// environment's; zero values when c was compiled outside a registry). What the gateway resolved
// for an event is thus known exactly, even when a retired version made it fall back to another.
func (c *Compiled) OrganizationID() string { return c.id.OrganizationID }

// Action is the action of the version c was loaded from.
func (c *Compiled) Action() string { return c.id.Action }

// Version is the number of the version c was loaded from.
func (c *Compiled) Version() int { return c.id.Version }

// Compile checks d's JSON Schemas (keywords, limits, references, cost) and compiles each. An
// event must then satisfy: the actor's metadata schema, each target's metadata schema by its type
// (a target of a type the definition does not list is refused), and the event's metadata schema.
// Absent metadata is validated as an empty object, so "required" keys are enforced. A library
// panic while compiling is an ErrInvalid too, never a crash.
func Compile(d Definition) (c *Compiled, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("%w: the schema could not be compiled (%v)", ErrInvalid, r)
		}
	}()
	var actorRaw json.RawMessage
	if d.Actor != nil {
		actorRaw = d.Actor.Metadata
	}
	actor, err := parseJSONSchema("actor.metadata", actorRaw)
	if err != nil {
		return nil, err
	}
	meta, err := parseJSONSchema("metadata", d.Metadata)
	if err != nil {
		return nil, err
	}
	targets := make([]*parsed, len(d.Targets))
	for i, t := range d.Targets {
		if targets[i], err = parseJSONSchema(fmt.Sprintf("targets[%d].metadata", i), t.Metadata); err != nil {
			return nil, err
		}
	}
	cost, err := checkCost(actor, meta, targets)
	if err != nil {
		return nil, err
	}
	c = &Compiled{targets: make(map[string]*jsonschema.Schema, len(d.Targets)), cost: cost, log: slog.Default()}
	if c.actor, err = compilePart(actor, actorRaw); err != nil {
		return nil, err
	}
	if c.meta, err = compilePart(meta, d.Metadata); err != nil {
		return nil, err
	}
	for i, t := range d.Targets {
		s, err := compilePart(targets[i], t.Metadata)
		if err != nil {
			return nil, err
		}
		c.targets[t.Type] = s
		c.types = append(c.types, t.Type)
	}
	return c, nil
}

// compilePart compiles one JSON Schema as its own document, with no loader: it can reach neither
// files nor the network.
func compilePart(p *parsed, raw json.RawMessage) (*jsonschema.Schema, error) {
	if p.root == nil {
		return nil, nil
	}
	comp := jsonschema.NewCompiler()
	comp.Loaders = map[string]func(string) (io.ReadCloser, error){}
	s, err := comp.Compile(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, p.field, err.Error())
	}
	return s, nil
}

// InstanceError is one schema violation, as WorkOS reports it: a JSON pointer into the event.
type InstanceError struct {
	InstancePath string `json:"instancePath"`
	Message      string `json:"message,omitempty"`
}

// panicPoint names the failpoint that makes Validate panic for events of the action it names
// (LOGBOOK_FAILPOINTS=schema-validate-panic=value:<action>), to test the recovery below.
const panicPoint = "schema-validate-panic"

// Validate returns the schema violations of ev, or nil when it conforms. It never panics: a panic
// while validating (a bug in the validator library, say) refuses the event with a message saying
// so, and is logged with its stack. Its work is bounded by Cost: the values it hands the library
// are first checked against the limits the bound assumes.
func (c *Compiled) Validate(ev *event.Event) (errs []InstanceError) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("schema validation panicked; the event is refused", "action", ev.Action,
				"organization_id", c.id.OrganizationID, "schema_version", c.id.Version, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			errs = []InstanceError{{InstancePath: "", Message: fmt.Sprintf(
				"the event could not be validated against its schema (an internal error in the validator, logged); it was not accepted: %v", r)}}
		}
	}()
	if failpoint.Enabled() && failpoint.Value(panicPoint) == ev.Action {
		panic("failpoint " + panicPoint)
	}
	if len(ev.Targets) > MaxTargets {
		return []InstanceError{{InstancePath: "/targets", Message: fmt.Sprintf("at most %d targets can be validated", MaxTargets)}}
	}
	// First the parts to validate and their bounds, then the library: nothing outside the limits
	// the cost bound assumes reaches it.
	type part struct {
		s    *jsonschema.Schema
		path string
		m    map[string]any
	}
	parts := []part{{c.actor, "/actor/metadata", ev.Actor.Metadata}}
	for i, t := range ev.Targets {
		s, ok := c.targets[t.Type]
		if !ok {
			errs = append(errs, InstanceError{InstancePath: fmt.Sprintf("/targets/%d/type", i),
				Message: fmt.Sprintf("target type %q is not one the schema lists (%s)", truncate(t.Type, 64), strings.Join(c.types, ", "))})
			continue
		}
		parts = append(parts, part{s, fmt.Sprintf("/targets/%d/metadata", i), t.Metadata})
	}
	parts = append(parts, part{c.meta, "/metadata", ev.Metadata})
	var outside []InstanceError
	runes := 0
	for _, p := range parts {
		if p.s != nil {
			outside = append(outside, checkInstance(p.path, p.m, &runes)...)
		}
	}
	if runes > MaxValidatedRunes {
		outside = append(outside, InstanceError{InstancePath: "", Message: fmt.Sprintf(
			"the event's metadata has %d characters of keys and strings where its schema applies; at most %d can be validated", runes, MaxValidatedRunes)})
	}
	if len(outside) > 0 {
		errs = append(errs, outside...)
		parts = nil
	}
	// Part by part; once MaxReportedErrors violations are found the event is refused anyway, so
	// the rest is not evaluated (failing evaluations are the library's costliest).
	for _, p := range parts {
		if len(errs) >= MaxReportedErrors {
			break
		}
		errs = append(errs, validatePart(p.s, p.path, p.m)...)
	}
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].InstancePath < errs[j].InstancePath })
	if len(errs) > MaxReportedErrors {
		errs = errs[:MaxReportedErrors]
	}
	return errs
}

// validatePart validates one metadata object (absent: {}) against s (nil: anything).
func validatePart(s *jsonschema.Schema, path string, m map[string]any) []InstanceError {
	if s == nil {
		return nil
	}
	raw, err := json.Marshal(orEmptyMap(m))
	if err != nil {
		return []InstanceError{{InstancePath: path, Message: err.Error()}}
	}
	res := s.ValidateJSON(raw)
	if res.IsValid() {
		return nil
	}
	return collect(res, path)
}

// boundedNumber reports whether s is a number of at most MaxInstanceNumberLen characters whose
// exponent keeps it within a 64-bit float's range (1e-1000000 parses as 0, but the validator's
// exact arithmetic would carry its million digits).
func boundedNumber(s string) bool {
	if len(s) > MaxInstanceNumberLen {
		return false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || exp < -400 || exp > 400 {
			return false
		}
	}
	return true
}

// checkInstance refuses metadata outside the limits the cost bound assumes, and adds the
// characters of its keys and strings to runes.
func checkInstance(path string, m map[string]any, runes *int) []InstanceError {
	if len(m) > MaxMetadataKeys {
		return []InstanceError{{InstancePath: path, Message: fmt.Sprintf("at most %d keys can be validated", MaxMetadataKeys)}}
	}
	var errs []InstanceError
	for k, v := range m {
		p := path + "/" + escapeToken(k)
		n := utf8.RuneCountInString(k)
		*runes += n
		if n > MaxKeyRunes {
			errs = append(errs, InstanceError{InstancePath: p, Message: fmt.Sprintf("keys of at most %d characters can be validated", MaxKeyRunes)})
			continue
		}
		switch x := v.(type) {
		case string:
			n := utf8.RuneCountInString(x)
			*runes += n
			if n > MaxValueRunes {
				errs = append(errs, InstanceError{InstancePath: p, Message: fmt.Sprintf("strings of at most %d characters can be validated", MaxValueRunes)})
			}
		case bool, nil:
		case json.Number:
			if !boundedNumber(string(x)) {
				errs = append(errs, InstanceError{InstancePath: p, Message: fmt.Sprintf(
					"the number is out of range: numbers must be finite 64-bit values written in at most %d characters", MaxInstanceNumberLen)})
			}
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				errs = append(errs, InstanceError{InstancePath: p, Message: "the number is out of range: numbers must be finite"})
			}
		default:
			errs = append(errs, InstanceError{InstancePath: p, Message: "metadata values must be strings, numbers or booleans"})
		}
	}
	return errs
}

// MaxReportedErrors caps the violations reported for one event (the first, by instance path).
const MaxReportedErrors = 100

// collect turns the library's evaluation tree (each node's instance location is relative to its
// parent's) into the deepest failing locations under base, one message per path: the first
// MaxReportedErrors paths in order, each with the message of its first failing keyword.
func collect(root *jsonschema.EvaluationResult, base string) []InstanceError {
	byPath := map[string]*jsonschema.EvaluationResult{}
	var walk func(r *jsonschema.EvaluationResult, base string)
	walk = func(r *jsonschema.EvaluationResult, base string) {
		path := base + r.InstanceLocation
		deeper := false
		for _, d := range r.Details {
			if d != nil && !d.Valid && counts(r, d) {
				deeper = true
				walk(d, path)
			}
		}
		if deeper || r.Valid {
			return
		}
		if prev, ok := byPath[path]; !ok || len(prev.Errors) == 0 {
			byPath[path] = r
		}
	}
	walk(root, base)
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	if len(paths) > MaxReportedErrors {
		paths = paths[:MaxReportedErrors]
	}
	out := make([]InstanceError, 0, len(paths))
	for _, p := range paths {
		out = append(out, InstanceError{InstancePath: p, Message: firstMessage(byPath[p])})
	}
	return out
}

// counts reports whether the failure of detail d is one of r's violations: not a failed "if"
// (which only picks then or else), not the subschema of a "not", not a branch of an anyOf or
// oneOf that as a whole held.
func counts(r, d *jsonschema.EvaluationResult) bool {
	kw, _, _ := strings.Cut(strings.TrimPrefix(d.EvaluationPath, "/"), "/")
	switch kw {
	case "if", "not":
		return false
	case "anyOf", "oneOf":
		_, failed := r.Errors[kw]
		return failed
	}
	return true
}

// firstMessage is the message of r's first failing keyword, in keyword order.
func firstMessage(r *jsonschema.EvaluationResult) string {
	if len(r.Errors) == 0 {
		return "does not match the schema"
	}
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return truncate(r.Errors[keys[0]].Error(), 300)
}

func orEmptyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
