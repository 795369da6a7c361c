// Package retention keeps each organization's retention setting (how many days its events are
// kept) in a JetStream key-value bucket that every writer and query API replica watches. The writer
// stamps each row with its organization's current setting (the ClickHouse TTL drops whole parts by
// that stamp); the query API hides events older than the current setting and deletes them when the
// setting is shortened.
package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// MaxDays is the longest retention Logbook accepts: ten years, WorkOS's longest period.
const MaxDays = 3650

var periodPattern = regexp.MustCompile(`^([1-9][0-9]?)_(MONTH|MONTHS|YEAR|YEARS)$`)

// PeriodDays converts a WorkOS retention period ("1_MONTH" … "11_MONTHS", "1_YEAR" … "10_YEARS",
// as the Node SDK 11 sends it) to days: a month is 30 days and a year 365, the days WorkOS
// documents for these periods. ok is false for anything else.
func PeriodDays(period string) (days int, ok bool) {
	m := periodPattern.FindStringSubmatch(period)
	if m == nil {
		return 0, false
	}
	n, _ := strconv.Atoi(m[1])
	plural := n > 1
	switch m[2] {
	case "MONTH", "MONTHS":
		if n > 11 || plural != (m[2] == "MONTHS") {
			return 0, false
		}
		return 30 * n, true
	default:
		if n > 10 || plural != (m[2] == "YEARS") {
			return 0, false
		}
		return 365 * n, true
	}
}

// Setting is what the bucket holds for an organization.
type Setting struct {
	Days      int       `json:"days"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Policies is the in-memory view of every organization's setting, kept in step with the bucket by
// a watch. Safe for concurrent use.
type Policies struct {
	kv   jetstream.KeyValue
	mu   sync.RWMutex
	days map[string]uint16
	m    *natsx.Mirror
}

// Watch opens the retention bucket, loads every setting and keeps watching until Close.
func Watch(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Policies, error) {
	kv, err := js.KeyValue(ctx, event.BucketRetention)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketRetention, err)
	}
	p := &Policies{kv: kv, days: map[string]uint16{}}
	p.m, err = natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			p.remember(e.Key(), 0)
			return
		}
		var s Setting
		if err := json.Unmarshal(e.Value(), &s); err != nil || s.Days < 0 || s.Days > MaxDays {
			log.Error("skipping unreadable retention setting", "org_id", e.Key(), "err", err)
			return
		}
		p.remember(e.Key(), uint16(s.Days))
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load retention settings: %w", err)
	}
	return p, nil
}

func (p *Policies) remember(org string, days uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if days == 0 {
		delete(p.days, org)
		return
	}
	p.days[org] = days
}

// Close stops the watch.
func (p *Policies) Close() { p.m.Stop() }

// Days returns org's current retention in days, 0 when it has none (events are kept).
func (p *Policies) Days(org string) uint16 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.days[org]
}

// All returns a copy of every organization's setting.
func (p *Policies) All() map[string]uint16 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]uint16, len(p.days))
	for k, v := range p.days {
		out[k] = v
	}
	return out
}

// Get reads org's setting from the bucket (not the watched copy, so a replica answers what was
// just stored elsewhere). set is false when org never had one.
func (p *Policies) Get(ctx context.Context, org string) (days int, set bool, err error) {
	e, err := p.kv.Get(ctx, org)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("failed to read retention of %s: %w", org, err)
	}
	var s Setting
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return 0, false, fmt.Errorf("failed to decode retention of %s: %w", org, err)
	}
	return s.Days, true, nil
}

// Set stores org's retention and updates this replica's view at once (others follow their watch).
func (p *Policies) Set(ctx context.Context, org string, days int) error {
	if !event.ValidOrgID(org) || days < 1 || days > MaxDays {
		return fmt.Errorf("bad retention setting %q=%d", org, days)
	}
	raw, _ := json.Marshal(Setting{Days: days, UpdatedAt: time.Now().UTC()})
	if _, err := p.kv.Put(ctx, org, raw); err != nil {
		return fmt.Errorf("failed to store retention of %s: %w", org, err)
	}
	p.remember(org, uint16(days))
	return nil
}
