package destination

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// datadog posts to the logs intake v2 (https://http-intake.logs.<site>/api/v2/logs): a gzip JSON
// array of {ddsource, service, ddtags, hostname, message}, the message being the audit_log_event
// (Datadog parses a JSON message into attributes), with DD-API-KEY. 202 is success; 413 means
// split; 400, 401 and 403 are refusals; 408, 429 and 5xx are retried.
type datadog struct {
	url, apiKey, service, tags string
	client                     *http.Client
}

func newDatadog(d logstream.Destination, sec logstream.Secrets, client *http.Client) *datadog {
	dd := &datadog{url: d.URL, apiKey: sec.APIKey, service: d.Service, tags: d.Tags, client: client}
	if dd.url == "" {
		dd.url = "https://http-intake.logs." + d.Site + "/api/v2/logs"
	}
	if dd.service == "" {
		dd.service = "audit-logs"
	}
	return dd
}

type ddEntry struct {
	Source   string `json:"ddsource"`
	Service  string `json:"service"`
	Tags     string `json:"ddtags,omitempty"`
	Hostname string `json:"hostname"`
	Message  string `json:"message"`
}

func (d *datadog) Send(ctx context.Context, b *Batch) error {
	entries := make([]ddEntry, len(b.Events))
	for i := range b.Events {
		tags := "organization_id:" + b.Events[i].OrganizationID
		if d.tags != "" {
			tags = d.tags + "," + tags
		}
		entries[i] = ddEntry{Source: "logbook", Service: d.service, Tags: tags, Hostname: "logbook", Message: string(b.Events[i].Object())}
	}
	raw, err := json.Marshal(entries)
	if err != nil {
		return &Error{Refused: true, Msg: "datadog: " + err.Error()}
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	h := http.Header{}
	h.Set("DD-API-KEY", d.apiKey)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Encoding", "gzip")
	resp, answer, err := post(ctx, d.client, d.url, body.Bytes(), h, "datadog")
	if err != nil {
		return err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return statusError(resp, answer, "datadog")
}
