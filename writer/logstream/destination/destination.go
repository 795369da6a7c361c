// Package destination sends batches of audit events to where log streams deliver them, each in
// the wire format its receiver documents: a generic HTTP(S) endpoint (a JSON array signed as
// Standard Webhooks: HMAC-SHA256 over id, timestamp and body), Splunk HTTP Event Collector,
// S3-compatible object storage (gzip NDJSON objects, SigV4 through aws-sdk-go-v2), Datadog logs
// intake v2 and OpenTelemetry logs over OTLP/HTTP (JSON).
//
// A Sender makes one attempt per call; retrying is the caller's. Failures are *Error values that
// say whether to retry, how long the destination asked to wait (429/503 Retry-After) and whether
// the batch was too large (the caller splits it).
package destination

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/store"
)

// Batch is one delivery: events in stream order, all of one organization unless the stream is
// environment-wide.
type Batch struct {
	// StreamID is the log stream's id.
	StreamID string
	// Events are the events as the API shows them.
	Events []store.Event
}

// ID is the batch's identity, the same on every retry of the same events: the stream id and the
// first and last event ids. It is the Standard Webhooks webhook-id and part of S3 object keys, so
// receivers can drop a batch they already have.
func (b *Batch) ID() string {
	if len(b.Events) == 0 {
		return b.StreamID
	}
	return b.StreamID + "_" + b.Events[0].ID + "_" + b.Events[len(b.Events)-1].ID
}

// Sender delivers batches to one destination. Send makes one attempt. Safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, b *Batch) error
}

// Error is a failed attempt.
type Error struct {
	// Status is the HTTP status the destination answered, 0 when none (network error, timeout).
	Status int
	// Refused means the destination rejected the request for a reason retrying will not fix by
	// itself (4xx other than 408 and 429: bad credentials, a missing bucket, a malformed request).
	// The caller still retries, slowly, so fixing the configuration resumes delivery, and marks the
	// stream failing after a while.
	Refused bool
	// TooLarge means the batch was too large (413): send it in smaller pieces.
	TooLarge bool
	// RetryAfter is the wait the destination asked for (Retry-After), 0 when it said nothing.
	RetryAfter time.Duration
	// Msg describes the failure for operators (no secrets).
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// New returns the Sender for destination d with secrets sec, sending with client (nil: a client
// with a 30 s timeout).
func New(d logstream.Destination, sec logstream.Secrets, client *http.Client) (Sender, error) {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	switch d.Type {
	case logstream.TypeHTTP:
		return newWebhook(d, sec, client)
	case logstream.TypeSplunk:
		return newSplunk(d, sec, client), nil
	case logstream.TypeS3:
		return newS3(d, sec, client)
	case logstream.TypeDatadog:
		return newDatadog(d, sec, client), nil
	case logstream.TypeOTLP:
		return newOTLP(d, sec, client), nil
	}
	return nil, fmt.Errorf("unknown destination type %q", d.Type)
}

// MaxEvents is the most events a destination takes in one request (Datadog: 1,000), 0 for no
// limit of its own.
func MaxEvents(typ string) int {
	if typ == logstream.TypeDatadog {
		return 1000
	}
	return 0
}

// post sends body to url with header and returns the answer and its first 4 KiB; a transport
// failure is a retryable *Error.
func post(ctx context.Context, client *http.Client, url string, body []byte, header http.Header, what string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, &Error{Refused: true, Msg: fmt.Sprintf("%s: bad request: %v", what, err)}
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", "Logbook")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, &Error{Msg: fmt.Sprintf("%s: %v", what, redactURL(err))}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp, answer, nil
}

// statusError is the *Error of an HTTP answer that is not a success: 408, 429 and 5xx are retried
// (429 and 503 with their Retry-After), 413 means too large, other 4xx are refusals.
func statusError(resp *http.Response, answer []byte, what string) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Msg: fmt.Sprintf("%s answered %d: %s", what, resp.StatusCode, snippet(answer))}
	switch {
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		e.TooLarge = true
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests:
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		e.Refused = true
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Refused = true // redirects are not followed: a receiver that moved must be reconfigured
	}
	return e
}

// retryAfter parses a Retry-After value: seconds or an HTTP date; 0 when absent or unreadable.
// It is capped at an hour, so a confused receiver cannot park a stream for days.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, time.Hour))
}

// snippet is the start of a receiver's answer, on one line, for the last-error field.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// redactURL keeps a transport error's message without the URL's query (which may carry a token).
func redactURL(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			if s := err.Error(); strings.Contains(s, "?") {
				return inner.Error()
			}
		}
	}
	return err.Error()
}
