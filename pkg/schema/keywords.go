package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
)

// Limits on one JSON Schema of a definition (actor metadata, a target type's metadata, or the
// event's metadata), besides MaxDefinitionBytes and MaxDepth.
const (
	// MaxPatternLen caps a "pattern" or a "patternProperties" key, in bytes.
	MaxPatternLen = 1024
	// MaxPatternInsts caps the size of a pattern compiled to the regular expression program Go
	// runs (RE2: linear in the input, times this size). `^[a-z0-9_-]{1,40}$` is 84 instructions,
	// a UUID pattern 76, a thorough e-mail pattern about 500.
	MaxPatternInsts = 1000
	// MaxNumberLen caps a number literal anywhere in a schema, in characters.
	MaxNumberLen = 64
)

// Keyword kinds: what a keyword's value is, which tells the walker where subschemas are.
const (
	kwSchema     = iota // one subschema
	kwSchemaList        // an array of subschemas
	kwSchemaMap         // an object of named subschemas
	kwPatternMap        // patternProperties: an object of subschemas keyed by regular expressions
	kwPattern           // a regular expression
	kwRef               // a JSON pointer into the schema ("#/...")
	kwValue             // anything else: a value the validator compares or an annotation
)

// keywords are the JSON Schema 2020-12 keywords Logbook accepts, by kind. Keywords not listed
// here are refused when they are in refused, and otherwise ignored, as JSON Schema ignores unknown
// keywords (they are never evaluated).
var keywords = map[string]int{
	"$schema": kwValue, "$ref": kwRef, "$defs": kwSchemaMap, "$comment": kwValue,
	"allOf": kwSchemaList, "anyOf": kwSchemaList, "oneOf": kwSchemaList, "not": kwSchema,
	"if": kwSchema, "then": kwSchema, "else": kwSchema, "dependentSchemas": kwSchemaMap,
	"properties": kwSchemaMap, "patternProperties": kwPatternMap, "additionalProperties": kwSchema,
	"propertyNames": kwSchema, "unevaluatedProperties": kwSchema,
	"items": kwSchema, "prefixItems": kwSchemaList, "contains": kwSchema, "unevaluatedItems": kwSchema,
	"type": kwValue, "enum": kwValue, "const": kwValue,
	"multipleOf": kwValue, "maximum": kwValue, "exclusiveMaximum": kwValue, "minimum": kwValue, "exclusiveMinimum": kwValue,
	"maxLength": kwValue, "minLength": kwValue, "pattern": kwPattern, "format": kwValue,
	"maxItems": kwValue, "minItems": kwValue, "uniqueItems": kwValue, "maxContains": kwValue, "minContains": kwValue,
	"maxProperties": kwValue, "minProperties": kwValue, "required": kwValue, "dependentRequired": kwValue,
	"title": kwValue, "description": kwValue, "default": kwValue, "deprecated": kwValue,
	"readOnly": kwValue, "writeOnly": kwValue, "examples": kwValue,
}

// refused are keywords that would let a schema load something, change how references resolve, or
// validate more than the flat metadata Logbook hands it, each with the reason given to the caller.
var refused = map[string]string{
	"$id":              "is not allowed (a schema cannot name or load other documents)",
	"$anchor":          "is not allowed; use a JSON pointer such as \"#/$defs/name\"",
	"$dynamicAnchor":   "is not allowed",
	"$dynamicRef":      "is not allowed; use $ref",
	"$recursiveRef":    "is not allowed; use $ref",
	"$recursiveAnchor": "is not allowed",
	"$vocabulary":      "is not allowed",
	"contentEncoding":  "is not supported (metadata values are plain strings)",
	"contentMediaType": "is not supported (metadata values are plain strings)",
	"contentSchema":    "is not supported (metadata values are plain strings)",
	"dependencies":     "is not supported in draft 2020-12; use dependentRequired or dependentSchemas",
	"additionalItems":  "is not supported in draft 2020-12; use items with prefixItems",
}

// Keywords returns the JSON Schema keywords Logbook evaluates, sorted.
func Keywords() []string {
	out := make([]string, 0, len(keywords))
	for k := range keywords {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// node is one subschema, with what evaluating it applies to the same instance and to an object
// instance's members: the graph the cost bound is computed on.
type node struct {
	ptr     string // JSON pointer from the schema's root ("" is the root)
	refPtr  string // the $ref's target, canonical; "" when none
	hasRef  bool
	ref     *node
	inPlace []*node // allOf, anyOf, oneOf, not: applied to the same instance
	cond    *node   // if
	then    *node
	els     *node
	depend  []*node // dependentSchemas: applied to the same (object) instance
	props   []*node // properties: a member applies at most one of them
	ppats   []*node // patternProperties: a member may apply each of them
	ppInsts []int   // the compiled size of each patternProperties key, in the order of ppats
	addl    *node   // additionalProperties
	names   *node   // propertyNames (applied to each member's name)
	uneval  *node   // unevaluatedProperties
	list    int     // values the validator compares one by one: enum, required, dependentRequired
	pattern int     // compiled size of "pattern", 0 when none
}

// parsed is one JSON Schema, checked and turned into its subschema graph.
type parsed struct {
	field string           // where it is in the definition: "metadata", "targets[2].metadata", ...
	root  *node            // nil for an absent schema
	nodes map[string]*node // by canonical JSON pointer
}

// parseJSONSchema checks raw, one JSON Schema of a definition (absent when empty or null): an
// object, at most MaxDepth levels deep, only local JSON-pointer references that name a subschema,
// patterns Go can run within MaxPatternInsts, numbers of at most MaxNumberLen characters and no
// refused keyword. It returns the subschema graph, references resolved.
func parseJSONSchema(field string, raw json.RawMessage) (*parsed, error) {
	p := &parsed{field: field, nodes: map[string]*node{}}
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, field, err.Error())
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: %s must be a JSON Schema object", ErrInvalid, field)
	}
	root, err := p.schema(v, "", 0)
	if err != nil {
		return nil, err
	}
	p.root = root
	for _, n := range p.nodes {
		if !n.hasRef {
			continue
		}
		if n.ref = p.nodes[n.refPtr]; n.ref == nil {
			return nil, p.errorf(n.ptr+"/$ref", "%q does not point to a schema inside this schema", "#"+n.refPtr)
		}
	}
	return p, nil
}

func (p *parsed) errorf(ptr, format string, args ...any) error {
	return fmt.Errorf("%w: %s%s: %s", ErrInvalid, p.field, ptr, fmt.Sprintf(format, args...))
}

// schema walks the subschema v found at ptr, depth levels into the JSON.
func (p *parsed) schema(v any, ptr string, depth int) (*node, error) {
	if depth > MaxDepth {
		return nil, p.errorf(ptr, "nests deeper than %d levels", MaxDepth)
	}
	n := &node{ptr: ptr}
	p.nodes[ptr] = n
	switch x := v.(type) {
	case bool:
		return n, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // deterministic messages
		for _, k := range keys {
			if err := p.keyword(n, k, x[k], ptr+"/"+escapeToken(k), depth+1); err != nil {
				return nil, err
			}
		}
		return n, nil
	default:
		return nil, p.errorf(ptr, "must be a JSON Schema (an object or a boolean)")
	}
}

func (p *parsed) keyword(n *node, k string, v any, ptr string, depth int) error {
	if why, ok := refused[k]; ok {
		return p.errorf(ptr, "%s %s", k, why)
	}
	kind, known := keywords[k]
	if !known {
		kind = kwValue
	}
	if kind == kwValue {
		if k == "$schema" {
			if s, _ := v.(string); s != "https://json-schema.org/draft/2020-12/schema" {
				return p.errorf(ptr, "only the 2020-12 $schema is supported")
			}
		}
		switch x := v.(type) {
		case []any:
			if k == "enum" || k == "required" {
				n.list += len(x)
			}
		case map[string]any:
			if k == "dependentRequired" {
				for _, names := range x {
					if list, ok := names.([]any); ok {
						n.list += len(list)
					}
				}
			}
		}
		return p.value(v, ptr, depth)
	}
	switch kind {
	case kwRef:
		s, ok := v.(string)
		if !ok {
			return p.errorf(ptr, "$ref must be a string")
		}
		target, err := localPointer(s)
		if err != nil {
			return p.errorf(ptr, "%q %s", s, err.Error())
		}
		n.hasRef, n.refPtr = true, target
	case kwPattern:
		s, ok := v.(string)
		if !ok {
			return p.errorf(ptr, "pattern must be a string")
		}
		insts, err := patternSize(s)
		if err != nil {
			return p.errorf(ptr, "%s", err.Error())
		}
		n.pattern = insts
	case kwSchema:
		child, err := p.schema(v, ptr, depth)
		if err != nil {
			return err
		}
		switch k {
		case "not":
			n.inPlace = append(n.inPlace, child)
		case "if":
			n.cond = child
		case "then":
			n.then = child
		case "else":
			n.els = child
		case "additionalProperties":
			n.addl = child
		case "propertyNames":
			n.names = child
		case "unevaluatedProperties":
			n.uneval = child
		} // items, contains, unevaluatedItems: metadata holds no arrays, so they are never applied
	case kwSchemaList:
		list, ok := v.([]any)
		if !ok {
			return p.errorf(ptr, "%s must be an array of schemas", k)
		}
		for i, item := range list {
			child, err := p.schema(item, ptr+"/"+strconv.Itoa(i), depth+1)
			if err != nil {
				return err
			}
			if k != "prefixItems" {
				n.inPlace = append(n.inPlace, child)
			}
		}
	case kwSchemaMap, kwPatternMap:
		m, ok := v.(map[string]any)
		if !ok {
			return p.errorf(ptr, "%s must be an object of schemas", k)
		}
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			child, err := p.schema(m[name], ptr+"/"+escapeToken(name), depth+1)
			if err != nil {
				return err
			}
			switch k {
			case "properties":
				n.props = append(n.props, child)
			case "dependentSchemas":
				n.depend = append(n.depend, child)
			case "patternProperties":
				insts, err := patternSize(name)
				if err != nil {
					return p.errorf(ptr, "%s", err.Error())
				}
				n.ppats = append(n.ppats, child)
				n.ppInsts = append(n.ppInsts, insts)
			} // $defs: applied only through $ref
		}
	}
	return nil
}

// value checks a keyword value that is not a subschema: its depth and its numbers.
func (p *parsed) value(v any, ptr string, depth int) error {
	if depth > MaxDepth {
		return p.errorf(ptr, "nests deeper than %d levels", MaxDepth)
	}
	switch x := v.(type) {
	case json.Number:
		if len(x) > MaxNumberLen {
			return p.errorf(ptr, "a number may have at most %d characters", MaxNumberLen)
		}
	case map[string]any:
		for k, child := range x {
			if err := p.value(child, ptr+"/"+escapeToken(k), depth+1); err != nil {
				return err
			}
		}
	case []any:
		for i, child := range x {
			if err := p.value(child, ptr+"/"+strconv.Itoa(i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// localPointer returns the canonical JSON pointer a $ref names, which must be local ("#" or
// "#/..."), decoded as the validator decodes it (percent-escapes, then ~1 and ~0).
func localPointer(ref string) (string, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return "", fmt.Errorf("may only point inside the schema (\"#/...\")")
	}
	if frag == "" {
		return "", nil
	}
	decoded, err := url.PathUnescape(frag)
	if err != nil || !strings.HasPrefix(decoded, "/") {
		return "", fmt.Errorf("must be a JSON pointer such as \"#/$defs/name\"")
	}
	tokens := strings.Split(decoded[1:], "/")
	for i, t := range tokens {
		tokens[i] = escapeToken(strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~"))
	}
	return "/" + strings.Join(tokens, "/"), nil
}

func escapeToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// patternSize checks a regular expression as the validator compiles it (Go's RE2 syntax) and
// returns the size of its program, which bounds the work of one match per input byte.
func patternSize(s string) (int, error) {
	if len(s) > MaxPatternLen {
		return 0, fmt.Errorf("the pattern is longer than %d bytes", MaxPatternLen)
	}
	re, err := syntax.Parse(s, syntax.Perl)
	if err != nil {
		return 0, fmt.Errorf("the pattern %q is not a regular expression Logbook can run: %s", truncate(s, 60), err.Error())
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, fmt.Errorf("the pattern %q is not a regular expression Logbook can run: %s", truncate(s, 60), err.Error())
	}
	if len(prog.Inst) > MaxPatternInsts {
		return 0, fmt.Errorf("the pattern %q is too large once compiled (%d instructions, at most %d; bounded repeats such as {1,1000} count once per repeat)",
			truncate(s, 60), len(prog.Inst), MaxPatternInsts)
	}
	return len(prog.Inst), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
