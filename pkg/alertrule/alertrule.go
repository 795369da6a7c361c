// Package alertrule holds what the alert-rule API (queryapi/alerts) and the evaluator
// (writer/alerts) share: a rule's definition and how it matches an event, the firings it produces,
// and the JetStream key-value buckets that keep rules (logbook_alert_rules), window state
// (logbook_alert_state) and firings (logbook_alert_firings).
//
// A rule belongs to one organization. It matches events by action (exact or "prefix*"), actor id
// and type, target id and type, metadata values and context fields; without a threshold every
// matching event fires, with one N matches within a window (grouped by actor, target or source
// address) fire; a cool-down quiets the rule (per group) after a firing. A firing is delivered to a
// webhook (signed as Standard Webhooks) or through a log stream's destination, and recorded.
package alertrule

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/logstream"
)

// Buckets.
const (
	BucketRules   = "logbook_alert_rules"
	BucketState   = "logbook_alert_state"
	BucketFirings = "logbook_alert_firings"
	// StateTTL bounds how long a group's window state is kept unchanged: longer than any window
	// and cool-down.
	StateTTL = 48 * time.Hour
	// FiringTTL is how long firings are kept (and listed).
	FiringTTL = 30 * 24 * time.Hour
	// IDPrefix starts every rule id.
	IDPrefix = "alert_rule_"
)

// Group-by choices.
const (
	GroupNone     = ""
	GroupActor    = "actor"
	GroupTarget   = "target"
	GroupLocation = "location"
)

// Destination types.
const (
	DestWebhook   = "webhook"
	DestLogStream = "log_stream"
)

// Rule is an alert rule.
type Rule struct {
	ID             string     `json:"id"`
	OrganizationID string     `json:"organization_id"`
	Name           string     `json:"name"`
	State          string     `json:"state"`
	Match          Match      `json:"match"`
	Threshold      *Threshold `json:"threshold,omitempty"`
	// CooldownSeconds quiets the rule for a group after it fired. 0: none.
	CooldownSeconds int         `json:"cooldown_seconds"`
	Destination     Destination `json:"destination"`
	CreatedAt       time.Time   `json:"created_at"`
	UpdatedAt       time.Time   `json:"updated_at"`
}

// Match selects events; empty fields do not filter, values within a field are alternatives,
// fields combine.
type Match struct {
	// Actions are exact names or prefixes ending in "*" ("user.*").
	Actions     []string `json:"actions,omitempty"`
	ActorIDs    []string `json:"actor_ids,omitempty"`
	ActorTypes  []string `json:"actor_types,omitempty"`
	TargetIDs   []string `json:"target_ids,omitempty"`
	TargetTypes []string `json:"target_types,omitempty"`
	// Metadata matches the event's metadata: each key must hold that value (as text).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Context matches context fields: "location" and "user_agent", exact.
	Context map[string]string `json:"context,omitempty"`
}

// Threshold fires when Count matching events of a group arrive within WindowSeconds.
type Threshold struct {
	Count         int    `json:"count"`
	WindowSeconds int    `json:"window_seconds"`
	GroupBy       string `json:"group_by,omitempty"`
}

// Destination is where firings go: a webhook URL (signed with the rule's secret) or a log stream.
type Destination struct {
	Type        string `json:"type"`
	URL         string `json:"url,omitempty"`
	LogStreamID string `json:"log_stream_id,omitempty"`
}

// Secrets are a rule's webhook signing secret, sealed at rest.
type Secrets struct {
	SigningSecret string `json:"signing_secret,omitempty"`
}

// Record is a rule as kept in BucketRules.
type Record struct {
	Rule
	Sealed string `json:"sealed_secrets,omitempty"`
}

var (
	actionPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}\*?$`)
	metaKey       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
)

// Validate checks r (and its secrets) and returns a *logstream.ValidationError naming every problem.
func Validate(r *Rule, sec *Secrets) error {
	var errs []logstream.FieldError
	bad := func(f, c string) { errs = append(errs, logstream.FieldError{Field: f, Code: c}) }
	if !event.ValidOrgID(r.OrganizationID) || r.OrganizationID == logstream.AuditOrg {
		bad("organization_id", "must be an organization id (1-64 letters, digits, '_' or '-'), not Logbook's own")
	}
	if n := len(r.Name); n < 1 || n > 128 {
		bad("name", "must be 1-128 characters")
	}
	if r.State != logstream.StateActive && r.State != logstream.StatePaused {
		bad("state", "must be active or paused")
	}
	m := &r.Match
	list := func(field string, vs []string, check func(string) bool) {
		if len(vs) > 100 {
			bad("match."+field, "at most 100 values")
		}
		for _, v := range vs {
			if v == "" || len(v) > 256 || (check != nil && !check(v)) {
				bad("match."+field, fmt.Sprintf("%q is not a valid value", v))
			}
		}
	}
	list("actions", m.Actions, actionPattern.MatchString)
	list("actor_ids", m.ActorIDs, nil)
	list("actor_types", m.ActorTypes, nil)
	list("target_ids", m.TargetIDs, nil)
	list("target_types", m.TargetTypes, nil)
	if len(m.Metadata) > 20 {
		bad("match.metadata", "at most 20 keys")
	}
	for k, v := range m.Metadata {
		if !metaKey.MatchString(k) || len(v) > 500 {
			bad("match.metadata", fmt.Sprintf("%q: keys of 1-40 letters, digits, '_' or '-', values of at most 500 characters", k))
		}
	}
	for k, v := range m.Context {
		if (k != "location" && k != "user_agent") || v == "" || len(v) > 1024 {
			bad("match.context", fmt.Sprintf("%q: only location and user_agent, with a value", k))
		}
	}
	if len(m.Actions)+len(m.ActorIDs)+len(m.ActorTypes)+len(m.TargetIDs)+len(m.TargetTypes)+len(m.Metadata)+len(m.Context) == 0 {
		bad("match", "must select something (at least one field)")
	}
	if t := r.Threshold; t != nil {
		if t.Count < 2 || t.Count > 10_000 {
			bad("threshold.count", "must be from 2 to 10000 (omit the threshold to fire on every match)")
		}
		if t.WindowSeconds < 1 || t.WindowSeconds > 86_400 {
			bad("threshold.window_seconds", "must be from 1 to 86400")
		}
		if !slices.Contains([]string{GroupNone, GroupActor, GroupTarget, GroupLocation}, t.GroupBy) {
			bad("threshold.group_by", "must be actor, target, location or absent")
		}
	}
	if r.CooldownSeconds < 0 || r.CooldownSeconds > 86_400 {
		bad("cooldown_seconds", "must be from 0 to 86400")
	}
	switch r.Destination.Type {
	case DestWebhook:
		u, err := url.Parse(r.Destination.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(r.Destination.URL) > 2048 {
			bad("destination.url", "must be an http or https URL without credentials")
		}
		if !logstream.ValidSigningSecret(sec.SigningSecret) {
			bad("destination.signing_secret", "must be whsec_ followed by the base64 of 24 to 64 bytes")
		}
		r.Destination.LogStreamID = ""
	case DestLogStream:
		if !strings.HasPrefix(r.Destination.LogStreamID, logstream.IDPrefix) {
			bad("destination.log_stream_id", "must name a log stream")
		}
		r.Destination.URL = ""
	default:
		bad("destination.type", "must be webhook or log_stream")
	}
	if len(errs) > 0 {
		return &logstream.ValidationError{Errors: errs}
	}
	return nil
}

// Matches reports whether rec is selected by m.
func (m *Match) Matches(rec *event.Record) bool {
	e := &rec.Event
	if len(m.Actions) > 0 && !slices.ContainsFunc(m.Actions, func(a string) bool {
		if p, ok := strings.CutSuffix(a, "*"); ok {
			return strings.HasPrefix(e.Action, p)
		}
		return a == e.Action
	}) {
		return false
	}
	if len(m.ActorIDs) > 0 && !slices.Contains(m.ActorIDs, e.Actor.ID) {
		return false
	}
	if len(m.ActorTypes) > 0 && !slices.Contains(m.ActorTypes, e.Actor.Type) {
		return false
	}
	if len(m.TargetIDs) > 0 && !slices.ContainsFunc(e.Targets, func(t event.Entity) bool { return slices.Contains(m.TargetIDs, t.ID) }) {
		return false
	}
	if len(m.TargetTypes) > 0 && !slices.ContainsFunc(e.Targets, func(t event.Entity) bool { return slices.Contains(m.TargetTypes, t.Type) }) {
		return false
	}
	for k, want := range m.Metadata {
		v, ok := e.Metadata[k]
		if !ok || fmt.Sprint(v) != want {
			return false
		}
	}
	for k, want := range m.Context {
		if (k == "location" && e.Context.Location != want) || (k == "user_agent" && e.Context.UserAgent != want) {
			return false
		}
	}
	return true
}

// Group is the group an event falls in under t (nil: one group).
func (t *Threshold) Group(rec *event.Record) string {
	if t == nil {
		return ""
	}
	switch t.GroupBy {
	case GroupActor:
		return rec.Event.Actor.Type + ":" + rec.Event.Actor.ID
	case GroupTarget:
		if len(rec.Event.Targets) > 0 {
			return rec.Event.Targets[0].Type + ":" + rec.Event.Targets[0].ID
		}
	case GroupLocation:
		return rec.Event.Context.Location
	}
	return ""
}

// Firing is one alert: what the rule saw and where it goes.
type Firing struct {
	Object         string    `json:"object"`
	ID             string    `json:"id"`
	RuleID         string    `json:"rule_id"`
	RuleName       string    `json:"rule_name"`
	OrganizationID string    `json:"organization_id"`
	GroupBy        string    `json:"group_by,omitempty"`
	Group          string    `json:"group,omitempty"`
	Count          int       `json:"count"`
	WindowSeconds  int       `json:"window_seconds,omitempty"`
	EventIDs       []string  `json:"event_ids"`
	FirstAt        time.Time `json:"first_event_at"`
	LastAt         time.Time `json:"last_event_at"`
	FiredAt        time.Time `json:"fired_at"`
	// Delivered is when the destination accepted it; nil while pending.
	Delivered *time.Time `json:"delivered_at"`
	Attempts  int        `json:"delivery_attempts"`
	LastError string     `json:"last_error,omitempty"`
}

// FiringKey is the key of a firing of rule in BucketFirings.
func FiringKey(rule, firing string) string { return rule + "." + firing }
