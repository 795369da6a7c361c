package alertrule_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/logbookhq/logbook/pkg/alertrule"
	"github.com/logbookhq/logbook/pkg/event"
)

func TestMatch(t *testing.T) {
	rec := &event.Record{ID: "e1", OrganizationID: "org_a", Event: event.Event{
		Action: "role.granted", Actor: event.Entity{ID: "user_1", Type: "user"},
		Targets:  []event.Entity{{ID: "team_1", Type: "team"}, {ID: "role_admin", Type: "role"}},
		Context:  event.Context{Location: "203.0.113.9", UserAgent: "curl"},
		Metadata: map[string]any{"role": "admin", "level": json.Number("3"), "sso": true},
	}}
	tests := []struct {
		name string
		m    alertrule.Match
		want bool
	}{
		{"exact action", alertrule.Match{Actions: []string{"role.granted"}}, true},
		{"prefix", alertrule.Match{Actions: []string{"role.*"}}, true},
		{"other action", alertrule.Match{Actions: []string{"user.*", "role.revoked"}}, false},
		{"actor id and type", alertrule.Match{ActorIDs: []string{"user_1"}, ActorTypes: []string{"user"}}, true},
		{"actor type differs", alertrule.Match{ActorTypes: []string{"api_key"}}, false},
		{"any target type", alertrule.Match{TargetTypes: []string{"role"}}, true},
		{"target id", alertrule.Match{TargetIDs: []string{"team_2"}}, false},
		{"metadata text, number, bool", alertrule.Match{Metadata: map[string]string{"role": "admin", "level": "3", "sso": "true"}}, true},
		{"metadata absent", alertrule.Match{Metadata: map[string]string{"mfa": "false"}}, false},
		{"context", alertrule.Match{Context: map[string]string{"location": "203.0.113.9", "user_agent": "curl"}}, true},
		{"context differs", alertrule.Match{Context: map[string]string{"location": "198.51.100.1"}}, false},
		{"all fields combine", alertrule.Match{Actions: []string{"role.*"}, Metadata: map[string]string{"role": "viewer"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tt.m.Matches(rec)) })
	}
	th := &alertrule.Threshold{GroupBy: alertrule.GroupActor}
	assert.Equal(t, "user:user_1", th.Group(rec))
	th.GroupBy = alertrule.GroupTarget
	assert.Equal(t, "team:team_1", th.Group(rec))
	th.GroupBy = alertrule.GroupLocation
	assert.Equal(t, "203.0.113.9", th.Group(rec))
	assert.Equal(t, "", (*alertrule.Threshold)(nil).Group(rec))
}
