package store

import (
	"encoding/json"
	"fmt"

	"github.com/logbookhq/logbook/pkg/event"
)

func eventJSON(e *event.Event) ([]byte, error) { return json.Marshal(e) }

// metadataText flattens metadata values to text for the searchable metadata column.
func metadataText(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = x
		case json.Number:
			out[k] = x.String()
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out
}
