package destination

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// otlp posts OpenTelemetry logs over OTLP/HTTP in its JSON encoding to <base>/v1/logs: one
// ResourceLogs per organization (resource attributes service.name "logbook" and
// organization.id), each event a LogRecord with timeUnixNano its occurred_at,
// observedTimeUnixNano its received time, severity INFO (9), eventName its action, the
// audit_log_event as a kvlist body, and attributes for the event id, actor, targets and context.
// 200 is success (a partialSuccess too: retrying would not help); 429, 502, 503 and 504 are
// retried (the spec's list); other statuses are refusals.
type otlp struct {
	url     string
	headers map[string]string
	client  *http.Client
}

func newOTLP(d logstream.Destination, sec logstream.Secrets, client *http.Client) *otlp {
	return &otlp{url: strings.TrimRight(d.URL, "/") + "/v1/logs", headers: sec.Headers, client: client}
}

// anyValue is OTLP's AnyValue in JSON.
type anyValue struct {
	String *string     `json:"stringValue,omitempty"`
	Bool   *bool       `json:"boolValue,omitempty"`
	Int    *string     `json:"intValue,omitempty"` // 64-bit integers are strings in OTLP JSON
	Double *float64    `json:"doubleValue,omitempty"`
	Array  *arrayValue `json:"arrayValue,omitempty"`
	KVList *kvList     `json:"kvlistValue,omitempty"`
}

type arrayValue struct {
	Values []anyValue `json:"values"`
}

type kvList struct {
	Values []keyValue `json:"values"`
}

type keyValue struct {
	Key   string   `json:"key"`
	Value anyValue `json:"value"`
}

func str(s string) anyValue { return anyValue{String: &s} }

// toAny converts decoded JSON (numbers as json.Number) into an AnyValue; object keys sorted.
func toAny(v any) anyValue {
	switch x := v.(type) {
	case string:
		return str(x)
	case bool:
		return anyValue{Bool: &x}
	case json.Number:
		if _, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			s := x.String()
			return anyValue{Int: &s}
		}
		f, _ := x.Float64()
		return anyValue{Double: &f}
	case []any:
		a := &arrayValue{Values: make([]anyValue, len(x))}
		for i, e := range x {
			a.Values[i] = toAny(e)
		}
		return anyValue{Array: a}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		l := &kvList{Values: make([]keyValue, len(keys))}
		for i, k := range keys {
			l.Values[i] = keyValue{Key: k, Value: toAny(x[k])}
		}
		return anyValue{KVList: l}
	}
	return anyValue{}
}

type logRecord struct {
	TimeUnixNano         string     `json:"timeUnixNano"`
	ObservedTimeUnixNano string     `json:"observedTimeUnixNano"`
	SeverityNumber       int        `json:"severityNumber"`
	SeverityText         string     `json:"severityText"`
	EventName            string     `json:"eventName"`
	Body                 anyValue   `json:"body"`
	Attributes           []keyValue `json:"attributes"`
}

type resourceLogs struct {
	Resource struct {
		Attributes []keyValue `json:"attributes"`
	} `json:"resource"`
	ScopeLogs []scopeLogs `json:"scopeLogs"`
}

type scopeLogs struct {
	Scope struct {
		Name string `json:"name"`
	} `json:"scope"`
	LogRecords []logRecord `json:"logRecords"`
}

func (o *otlp) Send(ctx context.Context, b *Batch) error {
	var req struct {
		ResourceLogs []*resourceLogs `json:"resourceLogs"`
	}
	byOrg := map[string]*resourceLogs{}
	for i := range b.Events {
		e := &b.Events[i]
		rl := byOrg[e.OrganizationID]
		if rl == nil {
			rl = &resourceLogs{}
			rl.Resource.Attributes = []keyValue{{"service.name", str("logbook")}, {"organization.id", str(e.OrganizationID)}}
			rl.ScopeLogs = []scopeLogs{{}}
			rl.ScopeLogs[0].Scope.Name = "logbook.audit_logs"
			byOrg[e.OrganizationID] = rl
			req.ResourceLogs = append(req.ResourceLogs, rl)
		}
		var obj map[string]any
		d := json.NewDecoder(bytes.NewReader(e.Object()))
		d.UseNumber()
		if err := d.Decode(&obj); err != nil {
			return &Error{Refused: true, Msg: "otlp: " + err.Error()}
		}
		attrs := []keyValue{{"logbook.event.id", str(e.ID)}, {"organization.id", str(e.OrganizationID)},
			{"actor.id", str(e.ActorID)}, {"actor.type", str(e.ActorType)}, {"client.address", str(e.Location)}}
		if e.UserAgent != "" {
			attrs = append(attrs, keyValue{"user_agent.original", str(e.UserAgent)})
		}
		rl.ScopeLogs[0].LogRecords = append(rl.ScopeLogs[0].LogRecords, logRecord{
			TimeUnixNano:         strconv.FormatInt(e.OccurredAt.UnixNano(), 10),
			ObservedTimeUnixNano: strconv.FormatInt(e.ReceivedAt.UnixNano(), 10),
			SeverityNumber:       9, SeverityText: "INFO", EventName: e.Action, Body: toAny(obj), Attributes: attrs,
		})
	}
	body, err := json.Marshal(req)
	if err != nil {
		return &Error{Refused: true, Msg: "otlp: " + err.Error()}
	}
	h := http.Header{}
	for k, v := range o.headers {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/json")
	resp, answer, err := post(ctx, o.client, o.url, body, h, "otlp")
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := statusError(resp, answer, "otlp")
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		if !e.TooLarge {
			e.Refused = true
		}
	}
	return e
}
