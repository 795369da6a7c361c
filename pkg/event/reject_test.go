package event_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/logbookhq/logbook/pkg/event"
)

func TestClassifyReject(t *testing.T) {
	tests := []struct {
		name, category, side, reason string
		wantCategory, wantSide       string
	}{
		{"header wins", event.RejectSchemaViolation, event.SideInput, "anything", event.RejectSchemaViolation, event.SideInput},
		{"legacy delivery limit is output-side", "", "", "delivered 21 times without being settled; giving up", event.RejectDeliveryLimit, event.SideOutput},
		{"legacy schema violation", "", "", `schema violation: [{"path":"/metadata/a"}]`, event.RejectSchemaViolation, event.SideInput},
		{"legacy unknown version", "", "", `unknown schema version: action "a" has no schema version 3`, event.RejectUnknownVersion, event.SideInput},
		{"legacy undecodable", "", "", "undecodable record: not json", event.RejectUndecodable, event.SideInput},
		{"writer undecodable", "", "", "writer could not decode: x", event.RejectUndecodable, event.SideInput},
		{"writer refused row", "", "", "clickhouse refused the row: Code: 27", event.RejectStoreRefused, event.SideInput},
		{"structural", "", "", "validation failed: event.actor.id is required", event.RejectInvalidRecord, event.SideInput},
		{"crash", "", "", "validator crashed on it: panic: x", event.RejectValidatorCrashed, event.SideInput},
		{"unknown", "", "", "something else", event.RejectOther, event.SideInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := event.ClassifyReject(tt.category, tt.side, tt.reason)
			assert.Equal(t, tt.wantCategory, c)
			assert.Equal(t, tt.wantSide, s)
		})
	}
}

func TestOrgFromSubject(t *testing.T) {
	assert.Equal(t, "org_a", event.OrgFromSubject(event.RawSubject("org_a")))
	assert.Equal(t, "org_a", event.OrgFromSubject(event.RawRedriveSubject("org_a", 42)))
	assert.Equal(t, "org_a", event.OrgFromSubject("logbook.raw.org_a.k.0123abcd"))
	assert.Equal(t, "org_b", event.OrgFromSubject(event.RejectedSubject("org_b")))
	assert.Equal(t, "", event.OrgFromSubject("other.raw.org_a"))
	assert.Equal(t, "", event.OrgFromSubject("logbook.raw"))
}
