package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

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

// bulkLine is one checked event waiting to be stored: a line of a bulk request, or the body of a
// single one.
type bulkLine struct {
	res    *LineResult
	rec    *event.Record
	key    string // Idempotency-Key of the line, or ""
	digest string // of the request, when it has a key
}

func (l *bulkLine) fail(err error) {
	var we *wire.Error
	if !errors.As(err, &we) {
		we = &wire.Error{Status: http.StatusInternalServerError, Code: "server_error", Message: "Internal Server Error"}
	}
	l.res.Status, l.res.Error = LineError, &lineError{Status: we.Status, Error: we}
}

// createBulk serves POST /audit_logs/events/bulk: NDJSON, one create-event body per line with an
// optional "idempotency_key", at most 1,000 lines and 5 MB, each line at most the single-event
// body limit. Every line is checked like a single event; the good lines are published together
// (they share atomic batches) and the answer, one result per line, comes only after every
// accepted line is stored. A bad line never costs the good ones.
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
	gw.storeAll(ctx, lines)
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
// says why). A line longer than the single-event body limit is refused before it is decoded (413
// in its result), so a large line costs no more memory than its bytes in the request.
func (gw *Gateway) parseLine(ctx context.Context, line []byte, now time.Time, res *LineResult) *bulkLine {
	failed := &bulkLine{res: res}
	if int64(len(line)) > gw.cfg.MaxBodyBytes {
		failed.fail(&wire.Error{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
			Message: fmt.Sprintf("A line holds at most %d bytes (the limit of one event's body); this one has %d.", gw.cfg.MaxBodyBytes, len(line))})
		return nil
	}
	req, key, err := validate.ParseBulkLine(line, now)
	if err == nil && len(key) > MaxIdempotencyKeyLen {
		err = validate.ErrIdempotencyKey
	}
	if err != nil {
		failed.fail(requestError(err))
		return nil
	}
	if err := allowWrite(ctx, req.OrganizationID); err != nil {
		failed.fail(err)
		return nil
	}
	l, err := gw.prepare(ctx, req, key, now, res)
	if err != nil {
		failed.fail(err)
		return nil
	}
	return l
}

// storeAll stores the lines, except that lines sharing an Idempotency-Key are stored one after
// the other, in request order: the first is the request, the later ones are repeats of it
// (duplicate, or 409 for another body). The first line of every key (and every line without one) is
// published in one PublishAll, which the group committer sends as one atomic batch (published line
// by line, the lines of a request were gathered into several batches as they came, each with the
// fixed cost of an atomic batch); whatever needs more than that one publish is settled after.
func (gw *Gateway) storeAll(ctx context.Context, lines []*bulkLine) {
	var groups [][]*bulkLine
	byKey := map[string]int{}
	for _, l := range lines {
		if l.key == "" {
			groups = append(groups, []*bulkLine{l})
			continue
		}
		k := l.rec.OrganizationID + "\x00" + l.key
		if i, ok := byKey[k]; ok {
			groups[i] = append(groups[i], l)
			continue
		}
		byKey[k] = len(groups)
		groups = append(groups, []*bulkLine{l})
	}
	pctx, cancel := context.WithTimeout(ctx, gw.cfg.PublishTimeout)
	defer cancel()
	data := make([][]byte, len(groups))
	var msgs []*nats.Msg
	for i, g := range groups {
		d, err := g[0].rec.Marshal()
		if err != nil {
			g[0].fail(err)
			continue
		}
		data[i] = d
		msgs = append(msgs, g[0].message(d))
	}
	errs := gw.pub.PublishAll(pctx, msgs)
	var wg sync.WaitGroup
	next := 0
	for i, g := range groups {
		var first error
		if data[i] != nil {
			first = errs[next]
			next++
		}
		if first == nil && data[i] != nil && len(g) == 1 {
			gw.settle(pctx, g[0], data[i], nil) // stored: nothing to wait for
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if data[i] != nil {
				gw.settle(pctx, g[0], data[i], first)
			}
			for _, l := range g[1:] {
				gw.store(ctx, l)
			}
		}()
	}
	wg.Wait()
}
