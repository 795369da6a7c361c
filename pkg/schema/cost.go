package schema

import (
	"fmt"
	"strings"
)

// What an event can hold where a schema applies: the WorkOS metadata limits pkg/validate enforces
// at the door, checked again by Validate before any keyword runs, since the cost bound rests on
// them (records can reach the validator by other paths than the gateway).
const (
	// MaxMetadataKeys caps the keys of one metadata object (actor, each target, the event).
	MaxMetadataKeys = 50
	// MaxTargets caps an event's targets.
	MaxTargets = 100
	// MaxKeyRunes caps a metadata key, in characters.
	MaxKeyRunes = 40
	// MaxValueRunes caps a metadata string value, in characters.
	MaxValueRunes = 500
	// MaxInstanceNumberLen caps a metadata number literal; it must also be a finite 64-bit float.
	// The validator's arithmetic is exact: 1e1000000 would be a 3.3-million-bit integer.
	MaxInstanceNumberLen = 32
	// MaxValidatedRunes caps the characters of metadata keys and string values, all metadata
	// objects of an event together, that are validated against a schema. Patterns cost per
	// character, so this bounds their work per event.
	MaxValidatedRunes = 64 << 10
)

// Cost bounds, in evaluation steps: one step is one subschema applied to one value (about a
// microsecond; see BenchmarkWorstAcceptedEvent); a list keyword (enum, required) adds a step per
// listsPerStep values; a pattern costs its program size times the characters it reads, in
// instRunesPerStep units (Go's regular expressions run in time linear in both; adversarial input
// reaches about 50 ns per instruction and character).
const (
	// MaxCost caps the worst case of one event: every metadata object with MaxMetadataKeys keys,
	// MaxTargets targets of the costliest type, MaxValidatedRunes characters all read by the
	// heaviest patterns.
	MaxCost = 100_000
	// MaxObjectCost caps what applying one schema to a metadata object of one key costs: the
	// fixed work every event pays, however small. An allOf of two $refs per level doubles it:
	// such a chain is refused from 11 levels on.
	MaxObjectCost = 5_000

	listsPerStep     = 16
	instRunesPerStep = 128
)

// levels of the instance a subschema is applied to: a metadata object, or one of its values
// (or member names). Metadata holds nothing deeper.
const (
	atObject = iota
	atScalar
)

// cost is the work of applying a subschema to one value. At the object level: fixed steps, plus
// steps per member, plus pattern instructions run per character of a member's value (runes) and
// of its name (keyRunes). At the scalar level: fixed steps, plus instructions per character of the
// value (runes).
type cost struct {
	fixed, member, runes, keyRunes int64
}

func (c cost) plus(o cost) cost {
	return cost{add(c.fixed, o.fixed), add(c.member, o.member), add(c.runes, o.runes), add(c.keyRunes, o.keyRunes)}
}

// oneKey is the cost on an object of one member with the longest name and value.
func (c cost) oneKey() int64 {
	return add(add(c.fixed, c.member), add(mul(c.runes, MaxValueRunes), mul(c.keyRunes, MaxKeyRunes))/instRunesPerStep)
}

type costKey struct {
	n     *node
	level int
}

// coster computes the cost of subschemas over the $ref graph, memoised per subschema and level;
// a reference cycle at the same level is refused (metadata is flat: recursion cannot descend).
type coster struct {
	p     *parsed
	done  map[costKey]cost
	stack []costKey
	onStk map[costKey]bool
}

// costOf returns the cost of applying p's schema to one metadata object (zero when absent).
func costOf(p *parsed) (cost, error) {
	if p.root == nil {
		return cost{}, nil
	}
	c := &coster{p: p, done: map[costKey]cost{}, onStk: map[costKey]bool{}}
	return c.cost(p.root, atObject)
}

func (c *coster) cost(n *node, level int) (cost, error) {
	if n == nil {
		return cost{}, nil
	}
	k := costKey{n, level}
	if v, ok := c.done[k]; ok {
		return v, nil
	}
	if c.onStk[k] {
		return cost{}, c.cycle(k)
	}
	c.onStk[k] = true
	c.stack = append(c.stack, k)
	v, err := c.compute(n, level)
	c.stack = c.stack[:len(c.stack)-1]
	delete(c.onStk, k)
	if err != nil {
		return cost{}, err
	}
	c.done[k] = v
	return v, nil
}

func (c *coster) compute(n *node, level int) (cost, error) {
	total := cost{fixed: 1 + int64(n.list)/listsPerStep}
	if level == atScalar && n.pattern > 0 {
		total = total.plus(cost{fixed: 1, runes: int64(n.pattern)})
	}
	sameLevel := append([]*node{n.ref, n.cond}, n.inPlace...)
	if level == atObject {
		sameLevel = append(sameLevel, n.depend...)
	}
	for _, child := range sameLevel {
		v, err := c.cost(child, level)
		if err != nil {
			return cost{}, err
		}
		total = total.plus(v)
	}
	then, err := c.cost(n.then, level)
	if err != nil {
		return cost{}, err
	}
	els, err := c.cost(n.els, level)
	if err != nil {
		return cost{}, err
	}
	total = total.plus(cost{max(then.fixed, els.fixed), max(then.member, els.member), max(then.runes, els.runes), max(then.keyRunes, els.keyRunes)})
	if level == atScalar {
		return total, nil
	}
	// Each member of the object: at most one of properties, or additionalProperties, applies to its
	// value; each patternProperties key is matched against its name and may apply to its value;
	// unevaluatedProperties applies to its value and propertyNames to its name.
	var member cost // fixed: steps per member; runes, keyRunes: per character of its value, name
	for _, child := range append(n.props, n.addl) {
		v, err := c.cost(child, atScalar)
		if err != nil {
			return cost{}, err
		}
		member.fixed, member.runes = max(member.fixed, v.fixed), max(member.runes, v.runes)
	}
	for i, child := range n.ppats {
		v, err := c.cost(child, atScalar)
		if err != nil {
			return cost{}, err
		}
		member = member.plus(v).plus(cost{fixed: 1, keyRunes: int64(n.ppInsts[i])})
	}
	uneval, err := c.cost(n.uneval, atScalar)
	if err != nil {
		return cost{}, err
	}
	names, err := c.cost(n.names, atScalar)
	if err != nil {
		return cost{}, err
	}
	member = member.plus(uneval).plus(cost{fixed: names.fixed, keyRunes: names.runes})
	return total.plus(cost{member: member.fixed, runes: member.runes, keyRunes: member.keyRunes}), nil
}

func (c *coster) cycle(k costKey) error {
	i := len(c.stack) - 1
	for i > 0 && c.stack[i] != k {
		i--
	}
	var path []string
	for _, s := range c.stack[i:] {
		if s.n.hasRef {
			path = append(path, "#"+s.n.ptr)
		}
	}
	path = append(path, "#"+k.n.ptr)
	return c.p.errorf(k.n.ptr, "$ref cycle %s: a schema may not apply itself to the same value (metadata is flat, so recursion is never needed)",
		strings.Join(path, " → "))
}

// saturation keeps sums and products of costs from overflowing; anything this large is refused.
const saturation = int64(1) << 60

func add(a, b int64) int64 { return min(a+b, saturation) }

func mul(a, b int64) int64 {
	if a != 0 && b > saturation/a {
		return saturation
	}
	return min(a*b, saturation)
}

// checkCost computes the worst-case cost of validating one event against a definition whose parts
// are actor, meta and targets, and refuses it past MaxObjectCost or MaxCost: the actor's and the
// event's metadata once each, MaxTargets targets of the costliest type, every object full, and
// MaxValidatedRunes characters read by the heaviest patterns of any part.
func checkCost(actor, meta *parsed, targets []*parsed) (int64, error) {
	var steps, runes, worstTarget int64
	costliest := "metadata"
	for _, p := range append([]*parsed{actor, meta}, targets...) {
		v, err := costOf(p)
		if err != nil {
			return 0, err
		}
		if one := v.oneKey(); one > MaxObjectCost {
			return 0, fmt.Errorf("%w: %s: the schema is too costly to evaluate: checking even one metadata key could need %s evaluation steps (at most %d). "+
				"Each allOf/anyOf/oneOf of $refs multiplies the work of what it references, and a pattern costs per character and instruction; "+
				"share definitions without nesting them", ErrInvalid, p.field, amount(one), MaxObjectCost)
		}
		full := add(v.fixed, mul(v.member, MaxMetadataKeys))
		runes = max(runes, v.runes, v.keyRunes)
		if p == actor || p == meta {
			steps = add(steps, full)
		} else if full > worstTarget {
			worstTarget = full
			if mul(full, MaxTargets) > steps {
				costliest = p.field + " (times " + fmt.Sprint(MaxTargets) + " targets)"
			}
		}
	}
	steps = add(steps, mul(worstTarget, MaxTargets))
	total := add(steps, mul(runes, MaxValidatedRunes)/instRunesPerStep)
	if total > MaxCost {
		return 0, fmt.Errorf("%w: the schema is too costly to evaluate: one event could need %s evaluation steps (at most %d), "+
			"%s of them for patterns (%d pattern instructions per character) and the most in %s. "+
			"Each allOf/anyOf/oneOf of $refs multiplies the work of what it references, and a pattern costs per character and instruction",
			ErrInvalid, amount(total), MaxCost, amount(mul(runes, MaxValidatedRunes)/instRunesPerStep), runes, costliest)
	}
	return total, nil
}

func amount(n int64) string {
	if n >= saturation {
		return "more than 10^18"
	}
	return fmt.Sprintf("%d", n)
}
