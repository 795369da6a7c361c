package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// Received selects events in the order Logbook received them, (received_at, id): what a log
// stream catches up on from ClickHouse.
type Received struct {
	// Org is the organization, or "" for every organization (an environment-wide log stream).
	Org string
	// From and AfterID are where to start: with AfterID, strictly after the event (From, AfterID)
	// (the last one delivered); without, every event received at or after From.
	From    time.Time
	AfterID string
	// Until is exclusive; zero means no bound.
	Until time.Time
}

const (
	receivedRetention = `
  AND (retention_days = 0 OR occurred_at >= now64(3) - toIntervalDay(retention_days))`
	receivedAfter = `
  AND (received_at, id) > (fromUnixTimestamp64Milli({from:Int64}, 'UTC'), {after_id:String})`
	receivedFrom = `
  AND received_at >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')`
)

// ReceivedPage returns up to limit events of f in received order.
func (s *Store) ReceivedPage(ctx context.Context, f Received, limit int) ([]Event, error) {
	if limit < 1 || limit > 100_000 {
		return nil, fmt.Errorf("page limit %d out of range", limit)
	}
	p := Params{"from": strconv.FormatInt(f.From.UnixMilli(), 10), "limit": strconv.Itoa(limit)}
	q := eventSelect
	if f.Org != "" {
		p["org"] = Text(f.Org)
		q += "organization_id = {org:String}"
	} else {
		q += "1"
	}
	q += receivedRetention
	if f.AfterID != "" {
		p["after_id"] = Text(f.AfterID)
		q += receivedAfter
	} else {
		q += receivedFrom
	}
	if !f.Until.IsZero() {
		p["until"] = strconv.FormatInt(f.Until.UnixMilli(), 10)
		q += "\n  AND received_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')"
	}
	q += "\nORDER BY received_at, id\nLIMIT {limit:UInt32}"
	// A catch-up reads like an export: the same limits.
	return s.events(ctx, q+s.limits.Export.Clause(), p, s.limits.Export)
}

// EventOf returns record r as a read from the store would: what the API and exports show.
func EventOf(r *event.Record) (Event, error) {
	actorMeta, err := objectJSON(r.Event.Actor.Metadata)
	if err != nil {
		return Event{}, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	meta, err := objectJSON(r.Event.Metadata)
	if err != nil {
		return Event{}, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
	}
	targets := "[]"
	if len(r.Event.Targets) > 0 {
		b, err := json.Marshal(r.Event.Targets)
		if err != nil {
			return Event{}, fmt.Errorf("failed to encode event %s: %w", r.ID, err)
		}
		targets = string(b)
	}
	return Event{
		ID: r.ID, OrganizationID: r.OrganizationID, OccurredAt: r.Event.OccurredAt.UTC().Truncate(time.Millisecond),
		ReceivedAt: r.ReceivedAt.UTC().Truncate(time.Millisecond), Action: r.Event.Action, Version: r.Event.Version,
		ActorID: r.Event.Actor.ID, ActorType: r.Event.Actor.Type, ActorName: r.Event.Actor.Name,
		ActorMetadata: actorMeta, Targets: targets, Location: r.Event.Context.Location,
		UserAgent: r.Event.Context.UserAgent, Metadata: meta,
	}, nil
}

// Object renders e as the API's audit_log_event object: the event as accepted plus its id, its
// organization and the time Logbook received it (created_at).
func (e *Event) Object() []byte {
	b := make([]byte, 0, 384+len(e.ActorMetadata)+len(e.Targets)+len(e.Metadata))
	b = append(b, `{"object":"audit_log_event","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"organization_id":`...)
	b = appendString(b, e.OrganizationID)
	b = append(b, `,"created_at":`...)
	b = appendString(b, event.FormatTime(e.ReceivedAt))
	b = append(b, ',')
	return append(b, e.JSON()[1:]...)
}
