package gateway_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/wire"
)

const testKey = "sk_test_0123456789abcdefghijklmnopqrstuv"

type oneKey struct{}

func (oneKey) Lookup(k string) (*apikey.Key, bool) {
	return &apikey.Key{Name: "test", Hash: apikey.Hash(k)}, k == testKey
}

// newAuthedEnv is newEnv behind wire.Auth, as the services run it, so routes know the caller's key.
func newAuthedEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.e.Use(wire.Auth(oneKey{}))
	return e
}

func (e *env) call(t *testing.T, method, path, body string) response {
	t.Helper()
	return e.do(t, method, path, body, map[string]string{"Authorization": "Bearer " + testKey})
}

// 640 concurrent events of an action whose environment schema uses patternProperties, through the
// HTTP path: the incident that killed the process inside kaptinlin/jsonschema v0.9.8. Every event
// gets its own right answer. Run under -race.
func TestConcurrentEventsAgainstAPatternPropertiesSchema(t *testing.T) {
	e := newAuthedEnv(t)
	r := e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", `{"targets":[{"type":"team"}],
	  "metadata":{"type":"object","patternProperties":{"^[a-z]+$":{"type":["number","boolean"]}},"additionalProperties":false}}`)
	require.Equal(t, http.StatusCreated, r.Code, "%s", r.Body)
	bad := patch(t, func(_, ev map[string]any) { ev["metadata"] = map[string]any{"attempts": "many", "admin": true} })

	const goroutines, each = 64, 10
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range each {
				body, want := workosBody, http.StatusOK
				if (g+i)%2 == 1 {
					body, want = bad, http.StatusBadRequest
				}
				r := e.call(t, http.MethodPost, "/audit_logs/events", body)
				if assert.Equal(t, want, r.Code, "%s", r.Body) {
					if want == http.StatusOK {
						ok.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	assert.Equal(t, int64(goroutines*each/2), ok.Load())
	assert.Equal(t, int64(goroutines*each/2), refused.Load())
	assert.Equal(t, uint64(ok.Load()), e.rawCount(t))
}

// A schema whose evaluation is not bounded is refused when registered, with the reason, and
// nothing is created: the 2^30 $ref chain of the issue, with its references written as JSON Schema
// means them ("#" is the metadata schema) or through the document earlier releases built around
// it ("#/properties/metadata", which they accepted).
func TestUnboundedSchemaIsRefusedAtRegistration(t *testing.T) {
	e := newAuthedEnv(t)
	chain := func(base string) string {
		defs := []string{`"d0":{"type":"object"}`}
		for i := 1; i <= 30; i++ {
			defs = append(defs, fmt.Sprintf(`"d%d":{"allOf":[{"$ref":"%s/$defs/d%d"},{"$ref":"%s/$defs/d%d"}]}`, i, base, i-1, base, i-1))
		}
		return `{"targets":[{"type":"team"}],"metadata":{"$defs":{` + strings.Join(defs, ",") + `},"$ref":"` + base + `/$defs/d30"}}`
	}
	for _, tt := range []struct{ path, body, why string }{
		{"/audit_logs/actions/user.signed_in/schemas", chain("#"), "too costly to evaluate: checking even one metadata key could need"},
		{"/organizations/" + org + "/audit_logs/actions/user.signed_in/schemas", chain("#"), "at most 5000"},
		{"/audit_logs/actions/user.signed_in/schemas", chain("#/properties/metadata"), "does not point to a schema inside this schema"},
	} {
		r := e.call(t, http.MethodPost, tt.path, tt.body)
		m := requireEnvelope(t, r, http.StatusUnprocessableEntity, "invalid_schema")
		assert.Contains(t, m["message"], tt.why)
	}
	assert.Equal(t, http.StatusNotFound, e.call(t, http.MethodGet, "/audit_logs/actions/user.signed_in/schemas", "").Code)
	assert.Equal(t, http.StatusOK, e.call(t, http.MethodPost, "/audit_logs/events", workosBody).Code, "the action has no schema")
}

// An operator retires a version that should not have been registered: it stays listed with who,
// when and why, and new events naming it are validated against the version before it.
func TestRetireSchemaVersion(t *testing.T) {
	e := newAuthedEnv(t)
	schemaOf := func(metaType string) string {
		return `{"targets":[{"type":"team"}],"metadata":{"type":"object","properties":{"attempts":{"type":"` + metaType + `"}}}}`
	}
	for _, typ := range []string{"number", "string"} {
		require.Equal(t, http.StatusCreated, e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", schemaOf(typ)).Code)
	}
	v2 := patch(t, func(_, ev map[string]any) { ev["version"] = 2 }) // attempts: 3, a number
	requireEnvelope(t, e.call(t, http.MethodPost, "/audit_logs/events", v2), http.StatusBadRequest, "invalid_audit_log_event")

	// Refusals first: nothing changes.
	for _, tt := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/audit_logs/actions/user.signed_in/schemas/2/retire", `{}`, http.StatusUnprocessableEntity, "invalid_retirement"},
		{"/audit_logs/actions/user.signed_in/schemas/2/retire", `{"reason":"x","extra":1}`, http.StatusUnprocessableEntity, "invalid_retirement"},
		{"/audit_logs/actions/user.signed_in/schemas/2/retire", `{"reason":"` + strings.Repeat("x", 1001) + `"}`, http.StatusUnprocessableEntity, "invalid_retirement"},
		{"/audit_logs/actions/user.signed_in/schemas/2/retire", `not json`, http.StatusBadRequest, "invalid_request_body"},
		{"/audit_logs/actions/user.signed_in/schemas/3/retire", `{"reason":"x"}`, http.StatusNotFound, "not_found"},
		{"/audit_logs/actions/user.signed_in/schemas/two/retire", `{"reason":"x"}`, http.StatusNotFound, "not_found"},
		{"/audit_logs/actions/no.such/schemas/1/retire", `{"reason":"x"}`, http.StatusNotFound, "not_found"},
		{"/organizations/" + org + "/audit_logs/actions/user.signed_in/schemas/1/retire", `{"reason":"x"}`, http.StatusNotFound, "not_found"},
	} {
		requireEnvelope(t, e.call(t, http.MethodPost, tt.path, tt.body), tt.status, tt.code)
	}
	requireEnvelope(t, e.call(t, http.MethodPost, "/audit_logs/events", v2), http.StatusBadRequest, "invalid_audit_log_event")

	r := e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas/2/retire", `{"reason":"attempts is a number"}`)
	require.Equal(t, http.StatusOK, r.Code, "%s", r.Body)
	s := r.json(t)
	assert.Equal(t, "audit_log_schema", s["object"])
	assert.Equal(t, float64(2), s["version"])
	assert.Equal(t, true, s["retired"])
	assert.Equal(t, "attempts is a number", s["retired_reason"])
	assert.Equal(t, "api_key:test", s["retired_by"], "the key's name")
	assert.Regexp(t, timeFormat, s["retired_at"])

	assert.Equal(t, http.StatusOK, e.call(t, http.MethodPost, "/audit_logs/events", v2).Code, "version 1 applies")
	v2Bad := patch(t, func(_, ev map[string]any) { ev["version"] = 2; ev["metadata"] = map[string]any{"attempts": "many"} })
	requireEnvelope(t, e.call(t, http.MethodPost, "/audit_logs/events", v2Bad), http.StatusBadRequest, "invalid_audit_log_event")

	// Listed with the flag, newest first; retiring again answers the first retirement.
	list := e.call(t, http.MethodGet, "/audit_logs/actions/user.signed_in/schemas", "").json(t)["data"].([]any)
	require.Len(t, list, 2)
	assert.Equal(t, true, list[0].(map[string]any)["retired"])
	assert.Equal(t, false, list[1].(map[string]any)["retired"])
	assert.NotContains(t, list[1], "retired_reason")
	again := e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas/2/retire", `{"reason":"again"}`).json(t)
	assert.Equal(t, "attempts is a number", again["retired_reason"])
	// The action's current schema is the newest in force.
	actions := e.call(t, http.MethodGet, "/audit_logs/actions", "").json(t)["data"].([]any)
	assert.Equal(t, float64(1), actions[0].(map[string]any)["schema"].(map[string]any)["version"])

	// An organization's own version: retired, the environment's applies again to its events.
	orgPath := "/organizations/" + org + "/audit_logs/actions/user.signed_in/schemas"
	require.Equal(t, http.StatusCreated, e.call(t, http.MethodPost, orgPath, schemaOf("boolean")).Code)
	requireEnvelope(t, e.call(t, http.MethodPost, "/audit_logs/events", workosBody), http.StatusBadRequest, "invalid_audit_log_event")
	r = e.call(t, http.MethodPost, orgPath+"/1/retire", `{"reason":"the environment's schema is right"}`)
	require.Equal(t, http.StatusOK, r.Code, "%s", r.Body)
	assert.Equal(t, true, r.json(t)["retired"])
	assert.Equal(t, http.StatusOK, e.call(t, http.MethodPost, "/audit_logs/events", workosBody).Code)
}

// A panic while validating one event (forced by a failpoint) answers that event 400 with the
// reason; nothing is published and the next events are served as before.
func TestValidationPanicIsARefusedEvent(t *testing.T) {
	const spec = "schema-validate-panic=value:user.signed_in"
	if os.Getenv("LOGBOOK_FAILPOINTS") != spec {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "LOGBOOK_FAILPOINTS="+spec)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "the child test failed:\n%s", out)
		require.Contains(t, string(out), "--- PASS: "+t.Name())
		return
	}
	e := newAuthedEnv(t)
	require.Equal(t, http.StatusCreated, e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_in/schemas", schemaBody).Code)
	require.Equal(t, http.StatusCreated, e.call(t, http.MethodPost, "/audit_logs/actions/user.signed_out/schemas", schemaBody).Code)
	m := requireEnvelope(t, e.call(t, http.MethodPost, "/audit_logs/events", workosBody), http.StatusBadRequest, "invalid_audit_log_event")
	assert.Contains(t, fmt.Sprint(m["errors"]), "could not be validated")
	assert.Zero(t, e.rawCount(t))
	other := patch(t, func(_, ev map[string]any) { ev["action"] = "user.signed_out" })
	assert.Equal(t, http.StatusOK, e.call(t, http.MethodPost, "/audit_logs/events", other).Code)
}
