package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/logbookhq/logbook/pkg/event"
)

// objectJSON encodes a metadata object as stored: "" when absent or empty.
func objectJSON(m map[string]any) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// metadataText flattens metadata values to text for the searchable metadata column.
func metadataText(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = valueText(v)
	}
	return out
}

func valueText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// searchText is what free-text search (Filter.Text) matches: the actor's and targets' ids and
// names, the context, and every metadata value, lower-cased, one per line.
func searchText(e *event.Event) string {
	var parts []string
	add := func(s string) {
		if s != "" {
			parts = append(parts, s)
		}
	}
	addMeta := func(m map[string]any) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add(valueText(m[k]))
		}
	}
	add(e.Actor.ID)
	add(e.Actor.Name)
	addMeta(e.Actor.Metadata)
	for _, t := range e.Targets {
		add(t.ID)
		add(t.Name)
		addMeta(t.Metadata)
	}
	add(e.Context.Location)
	add(e.Context.UserAgent)
	addMeta(e.Metadata)
	return strings.ToLower(strings.Join(parts, "\n"))
}
