package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/wire"
)

const org = "org_01EHWNCE74X7JSDV0X3SZ3KJNY"

// The create-event body of the WorkOS documentation, as the SDKs send it.
const workosBody = `{"organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY",
 "event":{"action":"user.signed_in","occurred_at":"2026-02-02T16:35:39.317Z",
  "actor":{"id":"user_TF4C5938","type":"user","name":"Jon Smith","metadata":{"role":"admin"}},
  "targets":[{"id":"team_123","type":"team","name":"Team","metadata":{"plan":"pro"}}],
  "context":{"location":"123.123.123.123","user_agent":"Chrome/104.0.0.0"},
  "metadata":{"attempts":3,"admin":true},"version":1}}`

// The Node SDK's createSchema body for user.signed_in.
const schemaBody = `{"actor":{"metadata":{"type":"object","properties":{"role":{"type":"string"}}}},
  "targets":[{"type":"team","metadata":{"type":"object","properties":{"plan":{"type":"string"}}}}],
  "metadata":{"type":"object","properties":{"attempts":{"type":"number"}}}}`

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type env struct {
	e  *echo.Echo
	js jetstream.JetStream
}

func newEnvWith(t testing.TB, js jetstream.JetStream, cfg gateway.Config) *env {
	t.Helper()
	reg, err := schema.NewRegistry(context.Background(), js, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	raw := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(raw.Close)
	e := wire.NewServer(quietLog())
	gateway.New(raw, rawStream(t, js), reg, cfg, quietLog()).Register(e.Group(""))
	return &env{e: e, js: js}
}

func rawStream(t testing.TB, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(context.Background(), event.StreamRaw)
	require.NoError(t, err)
	return s
}

func newEnv(t testing.TB) *env {
	t.Helper()
	_, js := natstest.New(t)
	return newEnvWith(t, js, gateway.DefaultConfig())
}

type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &m), "body: %s", r.Body)
	return m
}

func (e *env) do(t *testing.T, method, path, body string, header map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.e.ServeHTTP(rec, req)
	return response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func (e *env) postEvent(t *testing.T, body string, header map[string]string) response {
	t.Helper()
	return e.do(t, http.MethodPost, "/audit_logs/events", body, header)
}

func (e *env) rawCount(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func (e *env) rawMsgs(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// patch returns workosBody with change applied to its decoded form.
func patch(t testing.TB, change func(body, ev map[string]any)) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(workosBody), &m))
	change(m, m["event"].(map[string]any))
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return string(b)
}

// requireEnvelope checks the WorkOS error envelope and returns it.
func requireEnvelope(t *testing.T, r response, status int, code string) map[string]any {
	t.Helper()
	require.Equal(t, status, r.Code, "body: %s", r.Body)
	assert.True(t, strings.HasPrefix(r.Header.Get(echo.HeaderContentType), echo.MIMEApplicationJSON))
	assert.NotEmpty(t, r.Header.Get(echo.HeaderXRequestID))
	m := r.json(t)
	assert.NotEmpty(t, m["message"], "message")
	if code != "" {
		assert.Equal(t, code, m["code"])
	}
	return m
}

func TestCreateEventPublishesRecord(t *testing.T) {
	e := newEnv(t)
	before := time.Now().UTC().Truncate(time.Millisecond)
	r := e.postEvent(t, workosBody, nil)
	after := time.Now().UTC()

	require.Equal(t, http.StatusOK, r.Code, "body: %s", r.Body)
	assert.JSONEq(t, `{"success":true}`, string(r.Body))
	assert.True(t, strings.HasPrefix(r.Header.Get(echo.HeaderContentType), echo.MIMEApplicationJSON))
	assert.NotEmpty(t, r.Header.Get(echo.HeaderXRequestID))

	msgs := e.rawMsgs(t)
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, event.RawSubject(org), m.Subject)
	rec, err := event.Unmarshal(m.Data)
	require.NoError(t, err)
	id, err := ulid.ParseStrict(rec.ID)
	require.NoError(t, err, "the event id is a ULID")
	assert.Equal(t, org, rec.OrganizationID)
	assert.False(t, rec.ReceivedAt.IsZero())
	assert.Equal(t, time.UTC, rec.ReceivedAt.Location())
	assert.Equal(t, rec.ReceivedAt, rec.ReceivedAt.Truncate(time.Millisecond), "millisecond precision")
	assert.False(t, rec.ReceivedAt.Before(before) || rec.ReceivedAt.After(after), "received_at is the time of the request")
	assert.Equal(t, rec.ReceivedAt.UnixMilli(), int64(id.Time()), "the ULID carries the receive time")
	assert.Equal(t, rec.MsgID(), m.Header.Get(jetstream.MsgIDHeader))

	// The event is the one sent.
	assert.Equal(t, "user.signed_in", rec.Event.Action)
	assert.Equal(t, time.Date(2026, 2, 2, 16, 35, 39, 317_000_000, time.UTC), rec.Event.OccurredAt)
	assert.Equal(t, 1, rec.Event.Version)
	assert.Equal(t, "user_TF4C5938", rec.Event.Actor.ID)
	require.Len(t, rec.Event.Targets, 1)
	assert.Equal(t, "team", rec.Event.Targets[0].Type)
	assert.Equal(t, json.Number("3"), rec.Event.Metadata["attempts"], "numbers keep their digits")
	assert.Equal(t, "Chrome/104.0.0.0", rec.Event.Context.UserAgent)
}

func TestEveryAcceptedEventGetsItsOwnID(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, nil).Code)
	}
	ids := map[string]bool{}
	for _, m := range e.rawMsgs(t) {
		rec, err := event.Unmarshal(m.Data)
		require.NoError(t, err)
		ids[rec.ID] = true
	}
	assert.Len(t, ids, 5, "without an Idempotency-Key, identical requests are distinct events")
}

func TestCallerRequestIDIsEchoed(t *testing.T) {
	e := newEnv(t)
	r := e.postEvent(t, workosBody, map[string]string{echo.HeaderXRequestID: "req_from_caller"})
	require.Equal(t, http.StatusOK, r.Code)
	assert.Equal(t, "req_from_caller", r.Header.Get(echo.HeaderXRequestID))
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	key := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

	// The same key twice: both answered 200, one event stored.
	for i := 0; i < 2; i++ {
		r := e.postEvent(t, workosBody, key("key-1"))
		require.Equal(t, http.StatusOK, r.Code, "body: %s", r.Body)
		assert.JSONEq(t, `{"success":true}`, string(r.Body))
	}
	assert.Equal(t, uint64(1), e.rawCount(t))
	assert.Equal(t, event.RawKeySubject(org, "key-1"), e.rawMsgs(t)[0].Subject, "a keyed event is on its key's subject")

	// Another key is another event.
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, key("key-2")).Code)
	assert.Equal(t, uint64(2), e.rawCount(t))

	// The same key in another organization is another event.
	other := patch(t, func(b, _ map[string]any) { b["organization_id"] = "org_other" })
	require.Equal(t, http.StatusOK, e.postEvent(t, other, key("key-1")).Code)
	assert.Equal(t, uint64(3), e.rawCount(t))

	// An over-long key is refused and publishes nothing.
	r := e.postEvent(t, workosBody, key(strings.Repeat("k", gateway.MaxIdempotencyKeyLen+1)))
	requireEnvelope(t, r, http.StatusBadRequest, "invalid_idempotency_key")
	assert.Equal(t, uint64(3), e.rawCount(t))
	// The longest allowed key is accepted.
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, key(strings.Repeat("k", gateway.MaxIdempotencyKeyLen))).Code)
	assert.Equal(t, uint64(4), e.rawCount(t))
}

func TestBadInputPublishesNothing(t *testing.T) {
	e := newEnv(t)
	set := func(path string, v any) string {
		return patch(t, func(b, ev map[string]any) {
			parts := strings.Split(path, ".")
			var cur map[string]any = b
			for _, p := range parts[:len(parts)-1] {
				cur = cur[p].(map[string]any)
			}
			if v == nil {
				delete(cur, parts[len(parts)-1])
			} else {
				cur[parts[len(parts)-1]] = v
			}
		})
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		field  string // for 422: a field named in errors
	}{
		{"malformed JSON", `{"organization_id":`, http.StatusBadRequest, "invalid_request_body", ""},
		{"not an object", `[1,2,3]`, http.StatusBadRequest, "invalid_request_body", ""},
		{"trailing data", workosBody + `{}`, http.StatusBadRequest, "invalid_request_body", ""},
		{"empty body", ``, http.StatusBadRequest, "invalid_request_body", ""},
		{"missing organization", set("organization_id", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"missing event", set("event", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "event"},
		{"missing action", set("event.action", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "event.action"},
		{"missing actor", set("event.actor", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "event.actor"},
		{"missing context", set("event.context", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "event.context"},
		{"missing occurred_at", set("event.occurred_at", nil), http.StatusUnprocessableEntity, "unprocessable_entity", "event.occurred_at"},
		{"organization not a string", set("organization_id", 42), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"targets not an array", set("event.targets", "team"), http.StatusUnprocessableEntity, "unprocessable_entity", "event.targets"},
		{"version not a number", set("event.version", "1"), http.StatusUnprocessableEntity, "unprocessable_entity", "event.version"},
		{"occurred_at not a date", set("event.occurred_at", "yesterday"), http.StatusUnprocessableEntity, "unprocessable_entity", "event.occurred_at"},
		{"nested metadata", set("event.metadata", map[string]any{"a": map[string]any{"b": 1}}), http.StatusUnprocessableEntity, "unprocessable_entity", "event.metadata.a"},
		{"unknown field", set("extra", true), http.StatusUnprocessableEntity, "unprocessable_entity", "extra"},
		{"organization with a dot", set("organization_id", "org.a"), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"organization with *", set("organization_id", "org*"), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"organization with >", set("organization_id", "org>"), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"organization with a space", set("organization_id", "org a"), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"organization only a wildcard", set("organization_id", ">"), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
		{"organization too long", set("organization_id", strings.Repeat("o", 65)), http.StatusUnprocessableEntity, "unprocessable_entity", "organization_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.rawCount(t)
			r := e.postEvent(t, tt.body, nil)
			m := requireEnvelope(t, r, tt.status, tt.code)
			require.Contains(t, m, "errors", "a 4xx carries errors (the Node SDK needs both code and errors)")
			if tt.field != "" {
				errs, ok := m["errors"].([]any)
				require.True(t, ok, "errors is a list: %s", r.Body)
				var fields []string
				for _, fe := range errs {
					obj := fe.(map[string]any)
					assert.NotEmpty(t, obj["code"])
					fields = append(fields, fmt.Sprint(obj["field"]))
				}
				assert.Contains(t, fields, tt.field)
			}
			assert.Equal(t, before, e.rawCount(t), "nothing published")
		})
	}
}

func TestBodyOverLimitIs413(t *testing.T) {
	_, js := natstest.New(t)
	cfg := gateway.DefaultConfig()
	cfg.MaxBodyBytes = 1024
	e := newEnvWith(t, js, cfg)
	big := patch(t, func(_, ev map[string]any) {
		ev["metadata"] = map[string]any{"pad": strings.Repeat("x", 490), "pad2": strings.Repeat("y", 490)}
	})
	require.Greater(t, len(big), 1024)

	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/audit_logs/events", strings.NewReader(big))
			req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
			if chunked {
				req.ContentLength = -1 // no declared length: the limit applies while reading
				req.Body = io.NopCloser(bytes.NewReader([]byte(big)))
			}
			rec := httptest.NewRecorder()
			e.e.ServeHTTP(rec, req)
			requireEnvelope(t, response{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()},
				http.StatusRequestEntityTooLarge, "payload_too_large")
			assert.Zero(t, e.rawCount(t))
		})
	}
	// A body just within the limit is fine.
	small := patch(t, func(_, ev map[string]any) { delete(ev, "metadata") })
	require.LessOrEqual(t, len(small), 1024)
	require.Equal(t, http.StatusOK, e.postEvent(t, small, nil).Code)
}

var timeFormat = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func TestCreateSchemaAndValidateAgainstIt(t *testing.T) {
	e := newEnv(t)

	r := e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", schemaBody, nil)
	require.Equal(t, http.StatusCreated, r.Code, "body: %s", r.Body)
	s := r.json(t)
	assert.Equal(t, "audit_log_schema", s["object"])
	assert.Equal(t, float64(1), s["version"])
	require.IsType(t, "", s["created_at"])
	assert.Regexp(t, timeFormat, s["created_at"])
	assert.Contains(t, s, "targets")
	assert.Contains(t, s, "actor")
	assert.Contains(t, s, "metadata")

	// The next schema is version 2.
	r2 := e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", schemaBody, nil)
	require.Equal(t, http.StatusCreated, r2.Code)
	assert.Equal(t, float64(2), r2.json(t)["version"])

	// A conforming event is accepted.
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, nil).Code)
	require.Equal(t, uint64(1), e.rawCount(t))

	tests := []struct {
		name   string
		change func(ev map[string]any)
		path   string
	}{
		{"event metadata of the wrong type", func(ev map[string]any) { ev["metadata"] = map[string]any{"attempts": "many"} }, "/metadata/attempts"},
		{"actor metadata of the wrong type", func(ev map[string]any) {
			ev["actor"].(map[string]any)["metadata"] = map[string]any{"role": 7}
		}, "/actor/metadata/role"},
		{"target type the schema does not list", func(ev map[string]any) {
			ev["targets"] = []any{map[string]any{"id": "inv_1", "type": "invoice"}}
		}, "/targets/0/type"},
		{"unknown schema version", func(ev map[string]any) { ev["version"] = 3 }, "/version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.rawCount(t)
			body := patch(t, func(_, ev map[string]any) { tt.change(ev) })
			r := e.postEvent(t, body, nil)
			m := requireEnvelope(t, r, http.StatusBadRequest, "invalid_audit_log_event")
			errs, ok := m["errors"].([]any)
			require.True(t, ok, "errors is a list: %s", r.Body)
			var paths []string
			for _, ie := range errs {
				paths = append(paths, fmt.Sprint(ie.(map[string]any)["instancePath"]))
			}
			assert.Contains(t, paths, tt.path)
			assert.Equal(t, before, e.rawCount(t), "nothing published")
		})
	}
}

func TestCreateSchemaRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", `{"targets":`},
		{"no targets", `{"targets":[]}`},
		{"unknown field", `{"targets":[{"type":"team"}],"extra":1}`},
		{"metadata not a schema object", `{"targets":[{"type":"team"}],"metadata":"string"}`},
		{"external $ref", `{"targets":[{"type":"team"}],"metadata":{"$ref":"https://example.com/s.json"}}`},
		{"duplicate target type", `{"targets":[{"type":"team"},{"type":"team"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", tt.body, nil)
			m := requireEnvelope(t, r, http.StatusUnprocessableEntity, "invalid_schema")
			assert.Contains(t, m, "errors")
		})
	}
	// Nothing was created: an event with metadata of any type is still accepted.
	body := patch(t, func(_, ev map[string]any) { ev["metadata"] = map[string]any{"attempts": "many"} })
	assert.Equal(t, http.StatusOK, e.postEvent(t, body, nil).Code)

	// A schema body over the definition limit is refused in the envelope.
	huge := `{"targets":[{"type":"team"}],"metadata":{"description":"` + strings.Repeat("x", schema.MaxDefinitionBytes) + `"}}`
	r := e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", huge, nil)
	require.Less(t, r.Code, 500)
	require.GreaterOrEqual(t, r.Code, 400)
	requireEnvelope(t, r, r.Code, "")
}

func TestCreateSchemaRefusesOddActionNames(t *testing.T) {
	e := newEnv(t)
	paths := []string{
		"/audit_logs/actions/user%2Fsigned_in/schemas",
		"/audit_logs/actions/user%2fsigned_in/schemas",
		"/audit_logs/actions/user%20signed_in/schemas",
		"/audit_logs/actions/user+signed_in/schemas",
		"/audit_logs/actions/../schemas",
		"/audit_logs/actions/%2E%2E/schemas",
		"/audit_logs/actions/./schemas",
		"/audit_logs/actions/user..signed_in/schemas",
		"/audit_logs/actions/.user/schemas",
		"/audit_logs/actions/user./schemas",
		"/audit_logs/actions//schemas",
		"/audit_logs/actions/user%00/schemas",
		"/audit_logs/actions/user*/schemas",
		"/audit_logs/actions/user%3E/schemas",
		"/audit_logs/actions/user%252Esigned_in/schemas", // a literal "%2E", not a dot
		"/audit_logs/actions/" + strings.Repeat("a", 129) + "/schemas",
		"/audit_logs/actions/a/b/schemas",
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := e.do(t, http.MethodPost, p, schemaBody, nil)
			assert.Contains(t, []int{http.StatusUnprocessableEntity, http.StatusNotFound}, r.Code, "body: %s", r.Body)
			requireEnvelope(t, r, r.Code, "")
		})
	}
	// A percent-encoded dot is still a dot.
	r := e.do(t, http.MethodPost, "/audit_logs/actions/user%2Esigned_in/schemas", schemaBody, nil)
	require.Equal(t, http.StatusCreated, r.Code, "body: %s", r.Body)
}

// When JetStream cannot store the event, the producer is told to retry: 503 with Retry-After, never
// 2xx, and every 2xx answered is an event in the stream.
func TestPublishFailureIs503(t *testing.T) {
	limits := natsx.DefaultStreamLimits()
	limits.MaxBytes = 1 << 20
	_, js := natstest.NewWithLimits(t, limits)
	e := newEnvWith(t, js, gateway.DefaultConfig())

	// ~27 KB events: a 1 MiB stream is full after a few dozen.
	meta := map[string]any{}
	for i := 0; i < 50; i++ {
		meta[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 500)
	}
	big := patch(t, func(_, ev map[string]any) { ev["metadata"] = meta })

	ok := 0
	// fill posts body until the stream refuses it, then checks it keeps refusing it.
	fill := func(body string, header func(i int) map[string]string) {
		t.Helper()
		full := 0
		for i := 0; i < 2000 && full < 5; i++ {
			r := e.postEvent(t, body, header(i))
			switch r.Code {
			case http.StatusOK:
				require.Zero(t, full, "a 2xx after the stream refused the same size")
				ok++
			case http.StatusServiceUnavailable:
				full++
				requireEnvelope(t, r, http.StatusServiceUnavailable, "service_unavailable")
				assert.Equal(t, "1", r.Header.Get("Retry-After"))
			default:
				t.Fatalf("unexpected status %d: %s", r.Code, r.Body)
			}
		}
		require.Equal(t, 5, full, "the stream never filled up")
	}
	noKey := func(int) map[string]string { return nil }
	fill(big, noKey)
	require.Positive(t, ok)
	// Small events fill what room is left, then are refused too, with or without an Idempotency-Key.
	fill(workosBody, noKey)
	fill(workosBody, func(i int) map[string]string { return map[string]string{"Idempotency-Key": fmt.Sprint("k", i)} })
	assert.Equal(t, uint64(ok), e.rawCount(t), "every 200 is a stored event, and only those")
}

// With the NATS connection gone, the gateway answers 503, not 2xx and not 500.
func TestPublishWithoutNATSIs503(t *testing.T) {
	ns, js := natstest.New(t)
	nc, ownJS, err := natsx.ConnectInProcess(ns, t.Name()+"-gateway")
	require.NoError(t, err)
	e := newEnvWith(t, ownJS, gateway.Config{MaxBodyBytes: 256 << 10, PublishTimeout: 2 * time.Second})
	require.Equal(t, http.StatusOK, e.postEvent(t, workosBody, nil).Code)

	nc.Close()
	r := e.postEvent(t, workosBody, nil)
	requireEnvelope(t, r, http.StatusServiceUnavailable, "service_unavailable")
	assert.Equal(t, "1", r.Header.Get("Retry-After"))

	e.js = js // count through the connection still open
	assert.Equal(t, uint64(1), e.rawCount(t))
}

func TestUnknownRouteAndMethodUseTheEnvelope(t *testing.T) {
	e := newEnv(t)
	requireEnvelope(t, e.do(t, http.MethodPost, "/audit_logs/nope", "{}", nil), http.StatusNotFound, "not_found")
	r := e.do(t, http.MethodGet, "/audit_logs/events", "", nil)
	assert.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, r.Code)
	requireEnvelope(t, r, r.Code, "")
}

// When the schema registry cannot be read, the gateway cannot judge the event: 503, nothing stored.
func TestSchemasUnavailableIs503(t *testing.T) {
	ns, js := natstest.New(t)
	regConn, regJS, err := natsx.ConnectInProcess(ns, t.Name()+"-registry")
	require.NoError(t, err)
	reg, err := schema.NewRegistry(context.Background(), regJS, quietLog())
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	raw := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(raw.Close)
	srv := wire.NewServer(quietLog())
	gateway.New(raw, rawStream(t, js), reg, gateway.DefaultConfig(), quietLog()).Register(srv.Group(""))
	e := &env{e: srv, js: js}

	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", schemaBody, nil).Code)
	regConn.Close()
	// Version 2 is not in memory, so the registry must read the bucket, which it cannot.
	body := patch(t, func(_, ev map[string]any) { ev["version"] = 2 })
	r := e.postEvent(t, body, nil)
	requireEnvelope(t, r, http.StatusServiceUnavailable, "service_unavailable")
	assert.Equal(t, "1", r.Header.Get("Retry-After"))
	assert.Zero(t, e.rawCount(t))
}
