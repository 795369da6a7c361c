package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

// auditor records administrative changes before they are made: a *selfaudit.Recorder. Its error
// is the answer to give (a 503).
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// UseAudit makes the gateway record every schema registration in the self-audit organization
// before storing it. Without it, nothing is recorded (selfaudit.Discard).
func (gw *Gateway) UseAudit(a auditor) { gw.audit = a }

// allowWrite refuses events for an organization the caller may not name, and for the self-audit
// organization whoever the caller is: only Logbook writes there.
func allowWrite(ctx context.Context, org string) error {
	if org == event.SelfAuditOrgID {
		return reservedOrg()
	}
	return wire.AllowOrg(ctx, org)
}

func reservedOrg() error {
	return wire.Forbidden("reserved_organization",
		fmt.Sprintf("Organization '%s' holds Logbook's own audit trail; nothing is written into it through the API.", event.SelfAuditOrgID))
}

// allowSchema refuses a schema for the self-audit organization or for a Logbook action (it could
// make the validator reject Logbook's own records), an organization's schema the caller may not
// name, and an environment schema from a key limited to organizations.
func allowSchema(ctx context.Context, org, action string) error {
	switch {
	case org == event.SelfAuditOrgID:
		return reservedOrg()
	case strings.HasPrefix(action, event.SelfAuditActionPrefix):
		return wire.Forbidden("reserved_action",
			fmt.Sprintf("Actions starting with '%s' are Logbook's own; they take no schema.", event.SelfAuditActionPrefix))
	case org == "":
		return wire.AllowEnvironment(ctx)
	}
	return wire.AllowOrg(ctx, org)
}

// schemaRegistered is the self-audit entry of a schema registration. The version is the one the
// schema will most likely get (a concurrent registration of the same action can take it first);
// body_sha256 identifies the definition exactly as it was sent.
func schemaRegistered(org, action string, version int, body []byte) selfaudit.Entry {
	sum := sha256.Sum256(body)
	e := selfaudit.Entry{
		Action:  selfaudit.SchemaRegistered,
		Targets: []event.Entity{{ID: action, Type: selfaudit.TargetAction}},
		Metadata: map[string]any{
			"scope":            "environment",
			"expected_version": version,
			"body_sha256":      hex.EncodeToString(sum[:]),
		},
	}
	if org != "" {
		e.Targets = append(e.Targets, event.Entity{ID: org, Type: selfaudit.TargetOrganization})
		e.Metadata["scope"] = "organization"
		e.Metadata["organization_id"] = org
	}
	return e
}

// SchemaRetiredEntry is the self-audit record of retiring org's (or, for "", the environment's)
// version of action's schema.
func SchemaRetiredEntry(org, action string, version int, reason string) selfaudit.Entry {
	e := selfaudit.Entry{
		Action:   selfaudit.SchemaRetired,
		Targets:  []event.Entity{{ID: action, Type: selfaudit.TargetAction}},
		Metadata: map[string]any{"scope": "environment", "version": version, "reason": reason},
	}
	if org != "" {
		e.Targets = append(e.Targets, event.Entity{ID: org, Type: selfaudit.TargetOrganization})
		e.Metadata["scope"] = "organization"
		e.Metadata["organization_id"] = org
	}
	return e
}
