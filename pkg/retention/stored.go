package retention

import (
	"context"

	"github.com/logbookhq/logbook/pkg/event"
)

// StoredIDs reports which of recs' events are already stored (the writer uses it to isolate rows
// ClickHouse refuses without storing the others twice).
func (s Stamper) StoredIDs(ctx context.Context, recs []*event.Record) (map[string]bool, error) {
	return s.Store.StoredIDs(ctx, recs)
}
