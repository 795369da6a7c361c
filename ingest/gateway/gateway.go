// Package gateway is Logbook's ingest API: it checks what producers send, gives each event its
// identity, publishes it to the raw stream and answers 2xx only once JetStream has stored it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Config tunes the gateway.
type Config struct {
	// MaxBodyBytes caps a request body, and each line of a bulk request (measured before it is
	// decoded). Default 256 KiB, well below NATS's 1 MiB max payload.
	MaxBodyBytes int64
	// PublishTimeout bounds the wait for JetStream's acknowledgement (for a keyed event, the
	// publish and the read of its key's stored request together). Default 10 s.
	PublishTimeout time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 256 << 10, PublishTimeout: 10 * time.Second}
}

// MaxIdempotencyKeyLen caps the Idempotency-Key header.
const MaxIdempotencyKeyLen = 256

// publisher stores a message in JetStream and returns once it is acknowledged. In production it
// is a natsx.GroupCommit on the raw stream, so concurrent requests share one disk sync.
type publisher interface {
	Publish(ctx context.Context, msg *nats.Msg) error
	// PublishAll publishes msgs together, one result per message, each with Publish's meaning.
	PublishAll(ctx context.Context, msgs []*nats.Msg) []error
}

// keyRecords reads the message a key's raw subject holds: the raw stream's jetstream.Stream.
type keyRecords interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// schemas is the part of the schema registry the gateway needs: a *schema.Registry.
type schemas interface {
	schema.Source
	schema.OrgSource
	CreateFor(ctx context.Context, org, action string, d schema.Definition) (*schema.Schema, error)
	Retire(ctx context.Context, org, action string, version int, by, reason string) (*schema.Schema, bool, error)
	Versions(org, action string) []schema.Schema
	Actions() []string
}

// Gateway serves the ingest routes. Safe for concurrent use.
type Gateway struct {
	pub     publisher
	keys    keyRecords
	schemas schemas
	audit   auditor
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	newID   func(time.Time) string
	actor   func(echo.Context) string
}

// UseActor names the caller of an administrative route (a schema retirement records it) with f;
// by default it is the API key's name ("api_key:<name>"), or its digest outside Auth.
func (gw *Gateway) UseActor(f func(echo.Context) string) { gw.actor = f }

func keyActor(c echo.Context) string {
	if cl, ok := wire.CallerFrom(c.Request().Context()); ok && cl.Name != "" {
		return cl.ActorType + ":" + cl.Name // the key's name ("api_key:ci")
	}
	id := wire.KeyID(c)
	if len(id) < 12 {
		return "api_key"
	}
	return "api_key:" + id[:12]
}

// New returns a Gateway publishing through pub (a natsx.GroupCommit on the raw stream), reading
// the records of Idempotency-Keys from raw (the raw stream) and validating with reg.
func New(pub publisher, raw keyRecords, reg schemas, cfg Config, log *slog.Logger) *Gateway {
	entropy := ulid.DefaultEntropy() // monotonic within a millisecond, safe for concurrent use
	return &Gateway{
		pub: pub, keys: raw, schemas: reg, cfg: cfg, log: log, now: time.Now, audit: selfaudit.Discard, actor: keyActor,
		newID: func(t time.Time) string { return ulid.MustNew(ulid.Timestamp(t), entropy).String() },
	}
}

// Register adds the gateway's routes to g (which applies authentication), each with its scope.
func (gw *Gateway) Register(g *echo.Group) {
	write := wire.Need(apikey.ScopeEventsWrite)
	g.POST("/audit_logs/events", gw.createEvent, write)
	g.POST("/audit_logs/events/bulk", gw.createBulk, write)
	gw.registerSchemas(g)
}

type createEventResponse struct {
	Success bool `json:"success"`
}

func (gw *Gateway) createEvent(c echo.Context) error {
	body, err := wire.ReadBody(c, gw.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	now := gw.now().UTC()
	req, err := validate.ParseCreateEvent(body, now)
	if err != nil {
		return requestError(err)
	}
	if err := allowWrite(c.Request().Context(), req.OrganizationID); err != nil {
		return err
	}
	key := c.Request().Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyLen {
		return wire.BadRequest("invalid_idempotency_key",
			fmt.Sprintf("The Idempotency-Key header must be at most %d characters.", MaxIdempotencyKeyLen), nil)
	}
	// One event is a bulk request of one line: the same checks, publish and key handling.
	ctx := c.Request().Context()
	l, err := gw.prepare(ctx, req, key, now, &LineResult{})
	if err != nil {
		return err
	}
	gw.store(ctx, l)
	if l.res.Status == LineError {
		return l.res.Error.Error
	}
	// Accepted, or a repeat of a stored request (answered the same, nothing published).
	return c.JSON(http.StatusOK, createEventResponse{Success: true})
}

// checkSchema answers a schema violation in the response, as WorkOS does: the organization's own
// schema for the action when it has one, else the environment's. It returns the version it checked
// against (or none), which the record carries so that the validator checks exactly that version.
func (gw *Gateway) checkSchema(ctx context.Context, org string, ev *event.Event) (*event.SchemaRef, error) {
	compiled, ref, err := schema.ResolveRef(ctx, gw.schemas, org, ev.Action, ev.Version)
	if errors.Is(err, schema.ErrUnknownVersion) {
		return nil, wire.BadRequest("invalid_audit_log_event", "Invalid Audit Log event.",
			[]schema.InstanceError{{InstancePath: "/version", Message: err.Error()}})
	}
	if err != nil {
		return nil, wire.Unavailable("Schemas are unavailable; retry shortly.", 1)
	}
	if compiled != nil {
		if errs := compiled.Validate(ev); errs != nil {
			return nil, wire.BadRequest("invalid_audit_log_event", "Invalid Audit Log event.", errs)
		}
	}
	return ref, nil
}

// requestError maps a create-event parse error to the WorkOS envelope.
func requestError(err error) error {
	var fe validate.FieldErrors
	switch {
	case errors.As(err, &fe):
		return wire.Unprocessable("unprocessable_entity", "Validation failed.", fe)
	case errors.Is(err, validate.ErrMalformed):
		return wire.BadRequest("invalid_request_body", err.Error(), nil)
	case errors.Is(err, validate.ErrIdempotencyKey):
		return wire.BadRequest("invalid_idempotency_key",
			fmt.Sprintf("idempotency_key must be a string of at most %d characters.", MaxIdempotencyKeyLen), nil)
	}
	return err
}
