package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// Free text is a case-insensitive substring of the event's ids, names, context and metadata
// values, whatever index serves it: pieces of tokens, patterns across separators and runs of
// separators all match exactly the events whose text holds them. Checked against strings.Contains
// over several parts of a few thousand events.
func TestFreeTextIsASubstringMatch(t *testing.T) {
	ctx := context.Background()
	s := storetest.Shared(t)
	org := storetest.NewOrg(t)
	base := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	surnames := []string{"Smith", "Lovelace", "O'Hopper", "Nakamura-Kowalski", "Dubois"}
	texts := map[string]string{} // id -> what the event's text holds, lower-cased
	const parts, perPart = 3, 1500
	for p := range parts {
		var recs []*event.Record
		for i := range perPart {
			n := p*perPart + i
			r := storetest.Record(org, n, base.Add(time.Duration(n)*time.Minute))
			r.Event.Actor = event.Entity{ID: fmt.Sprintf("user_%04d", n%700), Type: "user", Name: "Ada " + surnames[n%len(surnames)]}
			r.Event.Targets = []event.Entity{{ID: fmt.Sprintf("document_01H%08d", n*7919%100_000), Type: "document"}}
			r.Event.Context = event.Context{Location: fmt.Sprintf("10.%d.%d.1", n%256, n/256), UserAgent: "Mozilla/5.0 (X11; Linux x86_64)"}
			r.Event.Metadata = map[string]any{"path": fmt.Sprintf("/api/v1/docs/%d", n), "note": "50%_off"}
			recs = append(recs, r)
			texts[r.ID] = strings.ToLower(strings.Join([]string{r.Event.Actor.ID, r.Event.Actor.Name, r.Event.Targets[0].ID,
				r.Event.Context.Location, r.Event.Context.UserAgent, r.Event.Metadata["note"].(string), r.Event.Metadata["path"].(string)}, "\n"))
		}
		require.NoError(t, s.Insert(ctx, fmt.Sprintf("text-%s-%d", org, p), recs))
	}
	for _, q := range []string{
		"smith", "SMITH", "mith", "love", "o'hopper", "nakamura-kow", "a-k", "ada smi", "da smith",
		"document_01h00012345", "document_01h0001", "01h0001", "ument_01", "_01h", "user_0042", "ser_00",
		"10.42.", ".42.1", "10.4", "/api/v1/docs/123", "docs/12", "x11; linux", "(x11", "0%_o", "50%_off", "%",
		"nobody", "zzzz_01h", "linux x86_64)",
	} {
		t.Run(q, func(t *testing.T) {
			var want []string
			for id, text := range texts {
				if strings.Contains(text, strings.ToLower(q)) {
					want = append(want, id)
				}
			}
			got, err := s.Search(ctx, store.Filter{Org: org, Text: q}, true, nil, store.MaxPage)
			require.NoError(t, err)
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			slices.Sort(want)
			slices.Sort(ids)
			if len(want) > store.MaxPage {
				assert.Len(t, ids, store.MaxPage)
				for _, id := range ids {
					assert.Contains(t, texts[id], strings.ToLower(q))
				}
				return
			}
			assert.Equal(t, want, ids)
		})
	}
}
