// Package gateway is Logbook's ingest API: it checks what producers send, gives each event its
// identity, publishes it to the raw stream and answers 2xx only once JetStream has stored it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/ingest/idempotency"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/failpoint"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Config tunes the gateway.
type Config struct {
	// MaxBodyBytes caps a request body. Default 256 KiB, well below NATS's 1 MiB max payload.
	MaxBodyBytes int64
	// PublishTimeout bounds the wait for JetStream's acknowledgement. Default 10 s.
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

// keys remembers Idempotency-Keys: an *idempotency.Store.
type keys interface {
	Claim(ctx context.Context, key string, rec idempotency.Record) (*idempotency.Record, error)
	Done(ctx context.Context, key string, rec idempotency.Record) error
}

// Gateway serves the ingest routes. Safe for concurrent use.
type Gateway struct {
	pub     publisher
	schemas schemas
	keys    keys
	marking sync.WaitGroup
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	newID   func(time.Time) string
	actor   func(echo.Context) string
}

// UseActor names the caller of an administrative route (a schema retirement records it) with f;
// by default it is the API key's digest, "api_key:<12 hex>".
func (gw *Gateway) UseActor(f func(echo.Context) string) { gw.actor = f }

func keyActor(c echo.Context) string {
	id := wire.KeyID(c)
	if len(id) < 12 {
		return "api_key"
	}
	return "api_key:" + id[:12]
}

// UseIdempotency makes the gateway remember Idempotency-Keys in k for 24 hours: a repeat is
// answered without publishing, a reused key with another body gets 409 idempotency_error. Without
// it, a repeat is collapsed only within JetStream's duplicate window.
func (gw *Gateway) UseIdempotency(k keys) { gw.keys = k }

// New returns a Gateway publishing through pub (a natsx.GroupCommit on the raw stream) and
// validating with reg.
func New(pub publisher, reg schemas, cfg Config, log *slog.Logger) *Gateway {
	entropy := ulid.DefaultEntropy() // monotonic within a millisecond, safe for concurrent use
	return &Gateway{
		pub: pub, schemas: reg, cfg: cfg, log: log, now: time.Now, actor: keyActor,
		newID: func(t time.Time) string { return ulid.MustNew(ulid.Timestamp(t), entropy).String() },
	}
}

// Register adds the gateway's routes to g (which applies authentication).
func (gw *Gateway) Register(g *echo.Group) {
	g.POST("/audit_logs/events", gw.createEvent)
	g.POST("/audit_logs/events/bulk", gw.createBulk)
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
	key := c.Request().Header.Get("Idempotency-Key")
	if len(key) > MaxIdempotencyKeyLen {
		return wire.BadRequest("invalid_idempotency_key",
			fmt.Sprintf("The Idempotency-Key header must be at most %d characters.", MaxIdempotencyKeyLen), nil)
	}
	ctx := c.Request().Context()
	if err := gw.checkSchema(ctx, req.OrganizationID, &req.Event); err != nil {
		return err
	}
	rec := &event.Record{
		OrganizationID: req.OrganizationID,
		ReceivedAt:     now.Truncate(time.Millisecond),
		Event:          req.Event,
	}
	rec.ID = gw.newID(now)
	// One event is a bulk request of one line: the same claim, publish and done mark.
	l := &bulkLine{res: &LineResult{}, rec: rec, key: key}
	gw.claim(ctx, l)
	switch l.res.Status {
	case LineError:
		return l.res.Error.Error
	case LineDuplicate: // a repeat of a stored request: the same answer, nothing published
		return c.JSON(http.StatusOK, createEventResponse{Success: true})
	}
	if err := gw.publish(ctx, rec, event.RawMsgID(rec.OrganizationID, key, rec.ID)); err != nil {
		return err
	}
	gw.markDone(l)
	return c.JSON(http.StatusOK, createEventResponse{Success: true})
}

// Wait waits for the idempotency records still being marked done; call it before closing the
// idempotency store.
func (gw *Gateway) Wait() { gw.marking.Wait() }

// checkSchema answers a schema violation in the response, as WorkOS does: the organization's own
// schema for the action when it has one, else the environment's. The validator worker applies the
// same check again before anything is stored.
func (gw *Gateway) checkSchema(ctx context.Context, org string, ev *event.Event) error {
	compiled, err := schema.Resolve(ctx, gw.schemas, org, ev.Action, ev.Version)
	if errors.Is(err, schema.ErrUnknownVersion) {
		return wire.BadRequest("invalid_audit_log_event", "Invalid Audit Log event.",
			[]schema.InstanceError{{InstancePath: "/version", Message: err.Error()}})
	}
	if err != nil {
		return wire.Unavailable("Schemas are unavailable; retry shortly.", 1)
	}
	if compiled == nil {
		return nil
	}
	if errs := compiled.Validate(ev); errs != nil {
		return wire.BadRequest("invalid_audit_log_event", "Invalid Audit Log event.", errs)
	}
	return nil
}

func (gw *Gateway) publish(ctx context.Context, rec *event.Record, msgID string) error {
	data, err := rec.Marshal()
	if err != nil {
		return err
	}
	msg := nats.NewMsg(event.RawSubject(rec.OrganizationID))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set(jetstream.ExpectedStreamHeader, event.StreamRaw)
	ctx, cancel := context.WithTimeout(ctx, gw.cfg.PublishTimeout)
	defer cancel()
	if err := gw.pub.Publish(ctx, msg); err != nil {
		// Whatever the cause (full stream, NATS away, timeout), the event is not known to be
		// stored: never answer 2xx. A retry with the same Idempotency-Key is safe.
		gw.log.Warn("publish failed", "org_id", rec.OrganizationID, "event_id", rec.ID, "err", err)
		return wire.Unavailable("The event could not be stored right now; retry shortly.", 1)
	}
	failpoint.Inject("gateway-after-publish") // stored, not yet answered
	return nil
}

// requestError maps a create-event parse error to the WorkOS envelope.
func requestError(err error) error {
	var fe validate.FieldErrors
	switch {
	case errors.As(err, &fe):
		return wire.Unprocessable("unprocessable_entity", "Validation failed.", fe)
	case errors.Is(err, validate.ErrMalformed):
		return wire.BadRequest("invalid_request_body", err.Error(), nil)
	}
	return err
}
