// Package reconcile compares what JetStream accepted with what ClickHouse holds, per organization,
// and names every gap and duplicate: the check that nothing acknowledged was lost on the way.
package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// MaxListed caps how many ids a report lists per organization and kind (the counts are exact).
const MaxListed = 100

// Org is one organization's reconciliation.
type Org struct {
	Organization string `json:"organization_id"`
	// Accepted is how many distinct events the raw stream holds (acknowledged by the gateway).
	Accepted int `json:"accepted"`
	Valid    int `json:"valid"`
	Rejected int `json:"rejected"`
	Stored   int `json:"stored"`
	// Pending counts events not yet settled by the validator or the writer (their consumer has
	// not acknowledged them yet): in flight, not lost.
	Pending int `json:"pending"`
	// Unvalidated: accepted, settled by the validator, yet in neither the valid nor the rejected stream.
	Unvalidated []string `json:"unvalidated"`
	// Missing: valid, settled by the writer, yet not in ClickHouse.
	Missing []string `json:"missing"`
	// Unaccepted: valid or rejected, yet not in the raw stream, which every event enters first: the
	// raw stream lost messages (a damaged store), or something wrote past the gateway.
	Unaccepted []string `json:"unaccepted"`
	// Duplicated: held by more than one row in ClickHouse.
	Duplicated []string `json:"duplicated"`
	// Unknown: in ClickHouse but not in the valid stream (older than the stream's retention, or
	// written by something else).
	Unknown      []string `json:"unknown"`
	MissingN     int      `json:"missing_count"`
	DuplicatedN  int      `json:"duplicated_count"`
	UnvalidatedN int      `json:"unvalidated_count"`
	UnknownN     int      `json:"unknown_count"`
	UnacceptedN  int      `json:"unaccepted_count"`
}

// Report is the result of a reconciliation.
type Report struct {
	Since         time.Time `json:"since"`
	Organizations []Org     `json:"organizations"`
	// OK is true when nothing is missing, unvalidated, unaccepted or duplicated.
	OK bool `json:"ok"`
}

// Store is what reconcile reads from ClickHouse.
type Store interface {
	EachID(ctx context.Context, org string, since time.Time, fn func(id string, rows uint64) error) error
}

type seen struct {
	ids     map[string]map[string]bool // org -> event ids
	pending map[string]map[string]bool // org -> ids past the consumer's ack floor
}

// Run reconciles events received at or after since.
func Run(ctx context.Context, js jetstream.JetStream, store Store, since time.Time) (*Report, error) {
	raw, err := read(ctx, js, event.StreamRaw, event.ConsumerValidator, since)
	if err != nil {
		return nil, err
	}
	valid, err := read(ctx, js, event.StreamValid, event.ConsumerWriter, since)
	if err != nil {
		return nil, err
	}
	rejected, err := read(ctx, js, event.StreamRejected, "", since)
	if err != nil {
		return nil, err
	}
	rep := &Report{Since: since, OK: true}
	orgSet := map[string]bool{}
	for _, m := range []map[string]map[string]bool{raw.ids, valid.ids, rejected.ids} {
		for o := range m {
			orgSet[o] = true
		}
	}
	orgs := make([]string, 0, len(orgSet))
	for o := range orgSet {
		orgs = append(orgs, o)
	}
	sort.Strings(orgs)
	for _, org := range orgs {
		o := Org{Organization: org, Accepted: len(raw.ids[org]), Valid: len(valid.ids[org]), Rejected: len(rejected.ids[org]),
			Unvalidated: []string{}, Missing: []string{}, Duplicated: []string{}, Unknown: []string{}, Unaccepted: []string{}}
		stored := map[string]uint64{}
		if err := store.EachID(ctx, org, since, func(id string, rows uint64) error {
			stored[id] = rows
			return nil
		}); err != nil {
			return nil, fmt.Errorf("failed to read stored ids of %s: %w", org, err)
		}
		o.Stored = len(stored)
		for id := range raw.ids[org] {
			switch {
			case raw.pending[org][id]:
				o.Pending++
			case !valid.ids[org][id] && !rejected.ids[org][id]:
				o.UnvalidatedN++
				o.Unvalidated = appendCapped(o.Unvalidated, id)
			}
		}
		for id := range valid.ids[org] {
			switch {
			case valid.pending[org][id]:
				o.Pending++
			case stored[id] == 0:
				o.MissingN++
				o.Missing = appendCapped(o.Missing, id)
			}
		}
		for _, later := range []map[string]bool{valid.ids[org], rejected.ids[org]} {
			for id := range later {
				if !raw.ids[org][id] {
					o.UnacceptedN++
					o.Unaccepted = appendCapped(o.Unaccepted, id)
				}
			}
		}
		for id, rows := range stored {
			if rows > 1 {
				o.DuplicatedN++
				o.Duplicated = appendCapped(o.Duplicated, id)
			}
			if !valid.ids[org][id] {
				o.UnknownN++
				o.Unknown = appendCapped(o.Unknown, id)
			}
		}
		for _, l := range [][]string{o.Unvalidated, o.Missing, o.Duplicated, o.Unknown, o.Unaccepted} {
			sort.Strings(l)
		}
		rep.OK = rep.OK && o.MissingN == 0 && o.UnvalidatedN == 0 && o.DuplicatedN == 0 && o.UnacceptedN == 0
		rep.Organizations = append(rep.Organizations, o)
	}
	return rep, nil
}

func appendCapped(l []string, id string) []string {
	if len(l) < MaxListed {
		return append(l, id)
	}
	return l
}

// read collects the event ids of stream received since, per organization, and which of them lie
// past the ack floor of the stream's consumer (not yet settled).
func read(ctx context.Context, js jetstream.JetStream, stream, consumer string, since time.Time) (*seen, error) {
	var floor uint64
	if consumer != "" {
		c, err := js.Consumer(ctx, stream, consumer)
		if err == nil {
			info, err := c.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("failed to read consumer %s: %w", consumer, err)
			}
			floor = info.AckFloor.Stream
		}
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	out := &seen{ids: map[string]map[string]bool{}, pending: map[string]map[string]bool{}}
	if info.State.Msgs == 0 {
		return out, nil
	}
	oc, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", stream, err)
	}
	// Ask for exactly what is left up to the last sequence, so no fetch waits for more.
	last, want := info.State.LastSeq, 1
	for {
		b, err := oc.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("failed to read stream %s: %w", stream, err)
		}
		n := 0
		var seq uint64
		for m := range b.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			seq = meta.Sequence.Stream
			var rec struct {
				ID             string `json:"id"`
				OrganizationID string `json:"organization_id"`
			}
			if json.Unmarshal(m.Data(), &rec) != nil || rec.ID == "" {
				continue
			}
			if out.ids[rec.OrganizationID] == nil {
				out.ids[rec.OrganizationID], out.pending[rec.OrganizationID] = map[string]bool{}, map[string]bool{}
			}
			out.ids[rec.OrganizationID][rec.ID] = true
			if consumer != "" && seq > floor {
				out.pending[rec.OrganizationID][rec.ID] = true
			}
		}
		if n == 0 || seq >= last {
			return out, nil
		}
		want = int(min(1000, last-seq))
	}
}
