package destination

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// splunk posts to HTTP Event Collector's /services/collector/event: one envelope per event,
// concatenated (Splunk's batch format: no array, no commas), each
// {"time": <occurred_at, epoch seconds with milliseconds>, "host", "source", "sourcetype",
// "index"?, "event": <audit_log_event>}, with "Authorization: Splunk <token>".
type splunk struct {
	url, token                string
	source, sourceType, index string
	client                    *http.Client
}

func newSplunk(d logstream.Destination, sec logstream.Secrets, client *http.Client) *splunk {
	s := &splunk{url: strings.TrimRight(d.URL, "/") + "/services/collector/event", token: sec.Token,
		source: d.Source, sourceType: d.SourceType, index: d.Index, client: client}
	if s.source == "" {
		s.source = "logbook"
	}
	if s.sourceType == "" {
		s.sourceType = "logbook:audit_log_event"
	}
	return s
}

func (s *splunk) Send(ctx context.Context, b *Batch) error {
	var body bytes.Buffer
	meta := func(k, v string) {
		body.WriteString(`,"` + k + `":`)
		q, _ := json.Marshal(v)
		body.Write(q)
	}
	for i := range b.Events {
		e := &b.Events[i]
		ms := e.OccurredAt.UnixMilli()
		body.WriteString(`{"time":` + strconv.FormatInt(ms/1000, 10) + "." + fmt.Sprintf("%03d", ms%1000))
		meta("host", "logbook")
		meta("source", s.source)
		meta("sourcetype", s.sourceType)
		if s.index != "" {
			meta("index", s.index)
		}
		body.WriteString(`,"event":`)
		body.Write(e.Object())
		body.WriteString("}\n")
	}
	h := http.Header{}
	h.Set("Authorization", "Splunk "+s.token)
	h.Set("Content-Type", "application/json")
	resp, answer, err := post(ctx, s.client, s.url, body.Bytes(), h, "splunk")
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := statusError(resp, answer, "splunk")
	// HEC's own codes: 9 (server busy) comes with 503, 8 (internal error) with 500: both retried.
	// 400/401/403 are refusals (bad token, disabled token, bad index, bad data), which statusError
	// already says.
	return e
}
