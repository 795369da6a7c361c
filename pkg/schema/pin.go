package schema

import (
	"context"
	"fmt"

	"github.com/logbookhq/logbook/pkg/event"
)

// An event is stored under the schema it was accepted under. The gateway resolves the schema with
// ResolveRef and writes the reference into the record (event.Record.Schema); the validator
// validates against exactly that version with ResolveRecord, so a schema registered between the
// gateway's answer and the validator's run changes nothing for events already answered. Versions
// are immutable, so a reference always means the same schema.

// ResolveRef is Resolve that also names the version it resolved: the organization's own version,
// the environment's, or none (the action has no schema in force; any event is accepted). The
// reference names the version actually chosen, which is not the version the event named when that
// one was retired (Resolve falls back to the newest earlier version in force).
func ResolveRef(ctx context.Context, s Source, org, action string, version int) (*Compiled, *event.SchemaRef, error) {
	c, err := Resolve(ctx, s, org, action, version)
	switch {
	case err != nil:
		return nil, nil, err
	case c == nil:
		return nil, &event.SchemaRef{Scope: event.SchemaNone}, nil
	case c.OrganizationID() != "":
		return c, &event.SchemaRef{Scope: event.SchemaOrg, Version: c.Version()}, nil
	}
	return c, &event.SchemaRef{Scope: event.SchemaEnv, Version: c.Version()}, nil
}

// PinnedSource finds one exact schema version: org's own version of action (org "" for the
// environment's), whether or not it is still the one new events resolve to. *Registry is one.
type PinnedSource interface {
	Pinned(ctx context.Context, org, action string, version int) (*Compiled, error)
}

// ResolveRecord returns the schema rec must satisfy: exactly the version its record names
// (rec.Schema), nil for none; a record without a reference (written before references existed, or
// by another path into the raw stream) is resolved as Resolve does. A referenced version that does
// not exist is ErrUnknownVersion.
func ResolveRecord(ctx context.Context, s Source, rec *event.Record) (*Compiled, error) {
	ref, action := rec.Schema, rec.Event.Action
	if ref == nil {
		return Resolve(ctx, s, rec.OrganizationID, action, rec.Event.Version)
	}
	var org string
	switch ref.Scope {
	case event.SchemaNone:
		return nil, nil
	case event.SchemaOrg:
		org = rec.OrganizationID
	case event.SchemaEnv:
	default:
		return nil, fmt.Errorf("%w: the record names schema scope %q", ErrUnknownVersion, ref.Scope)
	}
	if p, ok := s.(PinnedSource); ok {
		return p.Pinned(ctx, org, action, ref.Version)
	}
	if org == "" {
		return s.Lookup(ctx, action, ref.Version)
	}
	if os, ok := s.(OrgSource); ok {
		c, found, err := os.LookupOrg(ctx, org, action, ref.Version)
		if err == nil && !found {
			err = fmt.Errorf("%w: organization %s has no schema for %q", ErrUnknownVersion, org, action)
		}
		return c, err
	}
	return nil, fmt.Errorf("%w: no organization schemas here", ErrUnknownVersion)
}

// Pinned returns org's version of action's schema (org "" for the environment's), retired or not
// (Exact); ErrUnknownVersion when there is no such version. It never resolves: it is the lookup of a
// version a record names, so retiring a version keeps its key readable.
func (r *Registry) Pinned(ctx context.Context, org, action string, version int) (*Compiled, error) {
	if version < 1 {
		return nil, fmt.Errorf("%w: version %d", ErrUnknownVersion, version)
	}
	return r.Exact(ctx, org, action, version)
}
