package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// locate tells where the events acknowledged but not stored are: which of the raw, valid and
// rejected streams hold them (with their sequences and, for rejects, the reason). It runs only
// when something was lost, so that a failing run says which stage dropped them.
func locate(t *testing.T, js jetstream.JetStream, l *load, counts map[string]map[int]int) {
	t.Helper()
	lost := map[string]map[int]bool{}
	total := 0
	for _, o := range l.orgs {
		for n := range l.acked[o] {
			if counts[o][n] == 0 {
				if lost[o] == nil {
					lost[o] = map[int]bool{}
				}
				lost[o][n] = true
				total++
			}
		}
	}
	if total == 0 {
		return
	}
	for _, o := range l.orgs {
		var ns []int
		for n := range lost[o] {
			ns = append(ns, n)
		}
		sort.Ints(ns)
		t.Logf("%s: lost n in %s", o, ranges(ns))
	}
	for _, stream := range []string{event.StreamRaw, event.StreamValid, event.StreamRejected} {
		found, seqs, reasons, err := scan(js, stream, lost)
		if err != nil {
			t.Logf("%s: %v", stream, err)
			continue
		}
		var rs []string
		for r, k := range reasons {
			rs = append(rs, fmt.Sprintf("%q ×%d", r, k))
		}
		sort.Strings(rs)
		t.Logf("%s holds %d of the %d lost (sequences %s) %s", stream, found, total, ranges(seqs), strings.Join(rs, ", "))
	}
}

func scan(js jetstream.JetStream, stream string, lost map[string]map[int]bool) (int, []int, map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, nil, nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, nil, nil, err
	}
	found, seqs, reasons := 0, []int{}, map[string]int{}
	for info.State.Msgs > 0 {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return found, seqs, reasons, err
		}
		got := 0
		last := uint64(0)
		for m := range batch.Messages() {
			got++
			meta, _ := m.Metadata()
			if meta != nil {
				last = meta.Sequence.Stream
			}
			var rec struct {
				OrganizationID string `json:"organization_id"`
				Event          struct {
					Metadata map[string]any `json:"metadata"`
				} `json:"event"`
			}
			if json.Unmarshal(m.Data(), &rec) != nil {
				continue
			}
			n, ok := rec.Event.Metadata["n"].(float64)
			if ok && lost[rec.OrganizationID][int(n)] {
				found++
				if meta != nil {
					seqs = append(seqs, int(meta.Sequence.Stream))
				}
				reasons[m.Headers().Get(event.HeaderRejectCategory)]++
			}
		}
		if got == 0 || last >= info.State.LastSeq {
			break
		}
	}
	return found, seqs, reasons, nil
}

// ranges writes sorted ints as a-b runs.
func ranges(ns []int) string {
	sort.Ints(ns)
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprint(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	if len(parts) > 40 {
		parts = append(parts[:40], fmt.Sprintf("… (%d runs)", len(parts)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
