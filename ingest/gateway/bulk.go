package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/ingest/idempotency"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/validate"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Bulk limits.
const (
	MaxBulkEvents = 1000
	MaxBulkBytes  = 5 << 20
)

// Line outcomes of a bulk request.
const (
	LineAccepted  = "accepted"
	LineDuplicate = "duplicate"
	LineError     = "error"
)

// LineResult is the outcome of one line of a bulk request.
type LineResult struct {
	Line   int    `json:"line"`
	Status string `json:"status"`
	// ID is the stored event's id (for a duplicate, the id the first request gave it).
	ID string `json:"id,omitempty"`
	// Error is what the single-event endpoint would have answered for this line.
	Error *lineError `json:"error,omitempty"`
}

type lineError struct {
	Status int `json:"status"`
	*wire.Error
}

// BulkResponse answers POST /audit_logs/events/bulk.
type BulkResponse struct {
	Object     string       `json:"object"`
	Accepted   int          `json:"accepted"`
	Duplicates int          `json:"duplicates"`
	Failed     int          `json:"failed"`
	Results    []LineResult `json:"results"`
}

// bulkLine is one parsed line waiting to be stored.
type bulkLine struct {
	res    *LineResult
	rec    *event.Record
	key    string // Idempotency-Key of the line, or ""
	claim  idempotency.Record
	stored bool
}

// createBulk serves POST /audit_logs/events/bulk: NDJSON, one create-event body per line with an
// optional "idempotency_key", at most 1,000 lines and 5 MB. Every line is checked like a single
// event; the good lines are published together (they share atomic batches) and the answer, one
// result per line, comes only after every accepted line is stored. A bad line never costs the
// good ones.
func (gw *Gateway) createBulk(c echo.Context) error {
	mt, _, _ := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if mt != "application/x-ndjson" && mt != "application/jsonl" {
		return &wire.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: "The body must be NDJSON (Content-Type: application/x-ndjson), one event per line."}
	}
	body, err := wire.ReadBody(c, MaxBulkBytes)
	if err != nil {
		return err
	}
	raw := bytes.Split(bytes.TrimRight(body, "\r\n"), []byte("\n"))
	if len(body) == 0 {
		raw = nil
	}
	if len(raw) == 0 {
		return wire.BadRequest("invalid_request_body", "The body holds no events.", nil)
	}
	if len(raw) > MaxBulkEvents {
		return &wire.Error{Status: http.StatusRequestEntityTooLarge, Code: "too_many_events",
			Message: fmt.Sprintf("A bulk request holds at most %d events; this one has %d.", MaxBulkEvents, len(raw))}
	}
	if err := wire.Charge(c, len(raw)-1); err != nil { // the rate limit counts events, not requests
		return err
	}
	ctx := c.Request().Context()
	now := gw.now().UTC()
	results := make([]LineResult, len(raw))
	lines := make([]*bulkLine, 0, len(raw))
	for i, l := range raw {
		results[i] = LineResult{Line: i + 1}
		if bl := gw.parseLine(ctx, bytes.TrimSpace(l), now, &results[i]); bl != nil {
			lines = append(lines, bl)
		}
	}
	gw.claimAll(ctx, lines)
	gw.publishAll(ctx, lines)
	resp := BulkResponse{Object: "bulk_result", Results: results}
	unavailable := 0
	for _, r := range results {
		switch r.Status {
		case LineAccepted:
			resp.Accepted++
		case LineDuplicate:
			resp.Duplicates++
		default:
			resp.Failed++
			if r.Error != nil && r.Error.Status == http.StatusServiceUnavailable {
				unavailable++
			}
		}
	}
	if unavailable == len(results) {
		return wire.Unavailable("The events could not be stored right now; retry shortly.", 1)
	}
	return c.JSON(http.StatusOK, resp)
}

// parseLine checks one line as the single-event endpoint checks a body; nil means it failed (res
// says why).
func (gw *Gateway) parseLine(ctx context.Context, line []byte, now time.Time, res *LineResult) *bulkLine {
	fail := func(err error) *bulkLine {
		var we *wire.Error
		if !errors.As(err, &we) {
			we = &wire.Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"}
		}
		res.Status, res.Error = LineError, &lineError{Status: we.Status, Error: we}
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil || fields == nil {
		return fail(wire.BadRequest("invalid_request_body", "The line is not a JSON object.", nil))
	}
	var key string
	if k, ok := fields["idempotency_key"]; ok {
		if err := json.Unmarshal(k, &key); err != nil || len(key) > MaxIdempotencyKeyLen {
			return fail(wire.BadRequest("invalid_idempotency_key",
				fmt.Sprintf("idempotency_key must be a string of at most %d characters.", MaxIdempotencyKeyLen), nil))
		}
		delete(fields, "idempotency_key")
		line, _ = json.Marshal(fields)
	}
	req, err := validate.ParseCreateEvent(line, now)
	if err != nil {
		return fail(requestError(err))
	}
	if err := gw.checkSchema(ctx, req.OrganizationID, &req.Event); err != nil {
		return fail(err)
	}
	rec := &event.Record{OrganizationID: req.OrganizationID, ReceivedAt: now.Truncate(time.Millisecond), Event: req.Event}
	rec.ID = gw.newID(now)
	return &bulkLine{res: res, rec: rec, key: key}
}

// claimAll claims the lines' idempotency keys concurrently, so the claims share disk syncs.
func (gw *Gateway) claimAll(ctx context.Context, lines []*bulkLine) {
	var wg sync.WaitGroup
	for _, l := range lines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gw.claim(ctx, l)
		}()
	}
	wg.Wait()
}

// claim claims l's Idempotency-Key (if it has one and keys are remembered) before its event is
// published, so that of two concurrent requests with different bodies only one can win. A key
// already done makes the line a duplicate (answered without publishing); a key still pending (the
// first attempt running, or dead) makes the line publish that attempt's record again, which every
// hop deduplicates; a key used with another request is a 409.
func (gw *Gateway) claim(ctx context.Context, l *bulkLine) {
	if l.key == "" || gw.keys == nil {
		return
	}
	fail := func(e *wire.Error) { l.res.Status, l.res.Error = LineError, &lineError{Status: e.Status, Error: e} }
	digest, err := idempotency.Digest(l.rec.OrganizationID, &l.rec.Event)
	if err != nil {
		fail(&wire.Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"})
		return
	}
	l.claim = idempotency.Record{Digest: digest, EventID: l.rec.ID, ReceivedAtMs: l.rec.ReceivedAt.UnixMilli()}
	existing, err := gw.keys.Claim(ctx, idempotency.Key(l.rec.OrganizationID, l.key), l.claim)
	switch {
	case err != nil:
		gw.log.Warn("idempotency claim failed", "org_id", l.rec.OrganizationID, "err", err)
		fail(wire.Unavailable("The event could not be stored right now; retry shortly.", 1))
	case existing == nil:
	case existing.Digest != l.claim.Digest:
		fail(wire.Conflict("idempotency_error",
			"This idempotency key was already used with a different request in the last 24 hours."))
	case existing.State == idempotency.Done:
		l.res.Status, l.res.ID = LineDuplicate, existing.EventID
	default:
		l.claim = *existing
		l.rec.ID, l.rec.ReceivedAt = existing.EventID, time.UnixMilli(existing.ReceivedAtMs).UTC()
	}
}

// markDone records in the background that l's event is stored. The answer does not wait for it:
// until the mark lands, a repeat publishes the identical record again, which the raw stream's
// duplicate window collapses, so waiting would only add a disk sync to every request.
func (gw *Gateway) markDone(l *bulkLine) {
	if l.key == "" || gw.keys == nil {
		return
	}
	gw.marking.Add(1)
	go func() {
		defer gw.marking.Done()
		ctx, cancel := context.WithTimeout(context.Background(), gw.cfg.PublishTimeout)
		defer cancel()
		if err := gw.keys.Done(ctx, idempotency.Key(l.rec.OrganizationID, l.key), l.claim); err != nil {
			gw.log.Warn("idempotency record not marked done", "org_id", l.rec.OrganizationID, "event_id", l.rec.ID, "err", err)
		}
	}()
}

// publishAll publishes the lines still undecided, concurrently (the group committer gathers them
// into atomic batches), and marks their keys done afterwards without holding the answer.
func (gw *Gateway) publishAll(ctx context.Context, lines []*bulkLine) {
	var wg sync.WaitGroup
	for _, l := range lines {
		if l.res.Status != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gw.publish(ctx, l.rec, event.RawMsgID(l.rec.OrganizationID, l.key, l.rec.ID)); err != nil {
				var we *wire.Error
				if !errors.As(err, &we) {
					we = &wire.Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"}
				}
				l.res.Status, l.res.Error = LineError, &lineError{Status: we.Status, Error: we}
				return
			}
			l.res.Status, l.res.ID, l.stored = LineAccepted, l.rec.ID, true
		}()
	}
	wg.Wait()
	for _, l := range lines {
		if l.stored {
			gw.markDone(l)
		}
	}
}
