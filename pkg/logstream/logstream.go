// Package logstream holds what the log-stream API (queryapi/logstreams) and the delivery workers
// (writer/logstream) share: a stream's configuration and status as kept in the JetStream
// key-value bucket logbook_log_streams, the sealing of its secrets, and the name and settings of
// the durable consumer of LOGBOOK_VALID that holds its position.
//
// A log stream sends every valid event of one organization (or of every organization) to a
// destination: a generic HTTP(S) endpoint (JSON batches signed as Standard Webhooks), Splunk HTTP
// Event Collector, S3-compatible object storage, Datadog logs intake or OpenTelemetry logs over
// OTLP/HTTP. Its position is a durable JetStream consumer, so the valid stream keeps what it has
// not delivered (the trimmer never removes what a durable consumer has not settled).
package logstream

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// Bucket names.
const (
	// Bucket holds stream configurations (streams.<id>), their status as the delivery worker
	// reports it (status.<id>), replay requests (replay.<id>) and the delivery leases (lease.<id>).
	Bucket = "logbook_log_streams"
	// SecretKeyName names the key that seals destination secrets in event.BucketSecrets.
	SecretKeyName = "log-stream-secrets-key"
)

// Key prefixes in Bucket.
const (
	PrefixStream = "streams."
	PrefixStatus = "status."
	PrefixReplay = "replay."
	PrefixLease  = "lease."
)

// States an operator sets.
const (
	StateActive = "active"
	StatePaused = "paused"
)

// Destination types.
const (
	TypeHTTP    = "http"
	TypeSplunk  = "splunk"
	TypeS3      = "s3"
	TypeDatadog = "datadog"
	TypeOTLP    = "otlp"
)

// Types lists the destination types in the order the docs present them.
var Types = []string{TypeHTTP, TypeSplunk, TypeS3, TypeDatadog, TypeOTLP}

// Stream is a log stream's configuration. Secrets are not in it: they travel sealed beside it
// (Record) and open into Secrets only in the delivery worker.
type Stream struct {
	ID string `json:"id"`
	// OrganizationID is the one organization streamed, or "" for every organization
	// (an environment-wide stream).
	OrganizationID string      `json:"organization_id,omitempty"`
	Name           string      `json:"name"`
	State          string      `json:"state"`
	Destination    Destination `json:"destination"`
	Batch          Batch       `json:"batch"`
	CreatedAt      time.Time   `json:"created_at"`
	UpdatedAt      time.Time   `json:"updated_at"`
}

// Destination is where a stream delivers, without its secrets. Which fields apply depends on Type.
type Destination struct {
	Type string `json:"type"`
	// URL is the endpoint (http: the full URL; splunk: the collector's base, such as
	// https://splunk:8088; otlp: the base, /v1/logs is added; datadog: an optional override of
	// the site's intake URL).
	URL string `json:"url,omitempty"`
	// Site is Datadog's site (datadoghq.com, datadoghq.eu, us3.datadoghq.com, …).
	Site string `json:"site,omitempty"`
	// Service and Tags are Datadog's service and ddtags ("k:v,k:v").
	Service string `json:"service,omitempty"`
	Tags    string `json:"tags,omitempty"`
	// Index, Source and SourceType are Splunk's event fields (Source defaults to "logbook",
	// SourceType to "logbook:audit_log_event"; Index empty means the token's default).
	Index      string `json:"index,omitempty"`
	Source     string `json:"source,omitempty"`
	SourceType string `json:"sourcetype,omitempty"`
	// Bucket, Region, Prefix, Endpoint, PathStyle and AccessKeyID address S3 (Endpoint for
	// S3-compatible storage; empty means AWS).
	Bucket      string `json:"bucket,omitempty"`
	Region      string `json:"region,omitempty"`
	Prefix      string `json:"prefix,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"`
	PathStyle   bool   `json:"path_style,omitempty"`
	AccessKeyID string `json:"access_key_id,omitempty"`
	// HeaderNames names the custom headers sent on every request (http, otlp); their values are
	// secrets.
	HeaderNames []string `json:"header_names,omitempty"`
}

// Secrets are a destination's credentials, sealed at rest and never returned by the API.
type Secrets struct {
	// SigningSecret signs http batches (Standard Webhooks: "whsec_" + base64 of 32 bytes).
	SigningSecret string `json:"signing_secret,omitempty"`
	// Token is Splunk's HEC token.
	Token string `json:"token,omitempty"`
	// APIKey is Datadog's API key.
	APIKey string `json:"api_key,omitempty"`
	// SecretAccessKey is S3's secret key.
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	// Headers are custom request headers (http, otlp), such as an Authorization.
	Headers map[string]string `json:"headers,omitempty"`
}

// Batch bounds a delivery request. Zero fields take the defaults of DefaultBatch.
type Batch struct {
	// MaxEvents is the most events in one request. Default 500 (S3: 10,000), at most 10,000.
	MaxEvents int `json:"max_events,omitempty"`
	// MaxBytes is the most encoded bytes in one request (before compression). Default 1 MiB
	// (S3: 16 MiB), at most 16 MiB.
	MaxBytes int `json:"max_bytes,omitempty"`
	// LingerMS is how long a batch waits for more events after its first one. Default 200 ms
	// (S3: 10 s), at most 5 minutes.
	LingerMS int `json:"linger_ms,omitempty"`
}

// Limits of a Batch.
const (
	MaxBatchEvents = 10_000
	MaxBatchBytes  = 16 << 20
	MaxLinger      = 5 * time.Minute
)

// DefaultBatch returns the batch defaults for destination type typ: small and quick for request
// APIs, large and slow for object storage (one object per batch).
func DefaultBatch(typ string) Batch {
	if typ == TypeS3 {
		return Batch{MaxEvents: 10_000, MaxBytes: 16 << 20, LingerMS: 10_000}
	}
	return Batch{MaxEvents: 500, MaxBytes: 1 << 20, LingerMS: 200}
}

// WithDefaults fills b's zero fields from DefaultBatch(typ).
func (b Batch) WithDefaults(typ string) Batch {
	d := DefaultBatch(typ)
	if b.MaxEvents == 0 {
		b.MaxEvents = d.MaxEvents
	}
	if b.MaxBytes == 0 {
		b.MaxBytes = d.MaxBytes
	}
	if b.LingerMS == 0 {
		b.LingerMS = d.LingerMS
	}
	return b
}

// Linger is LingerMS as a duration.
func (b Batch) Linger() time.Duration { return time.Duration(b.LingerMS) * time.Millisecond }

// FieldError is one problem with a stream definition, named by its JSON path.
type FieldError struct {
	Field string `json:"field"`
	Code  string `json:"code"`
}

// ValidationError lists every problem found with a stream definition.
type ValidationError struct{ Errors []FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, f := range e.Errors {
		parts[i] = f.Field + ": " + f.Code
	}
	return "invalid log stream: " + strings.Join(parts, "; ")
}

var (
	headerName   = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	bucketName   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionName   = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
	siteName     = regexp.MustCompile(`^[a-z0-9.-]{1,64}$`)
	plainField   = regexp.MustCompile(`^[A-Za-z0-9_.:/ -]{1,128}$`)
	prefixString = regexp.MustCompile(`^[A-Za-z0-9_.=/-]{0,256}$`)
)

// reservedHeaders are set by Logbook itself and cannot be custom headers.
var reservedHeaders = []string{"content-type", "content-length", "content-encoding", "host", "webhook-id",
	"webhook-timestamp", "webhook-signature", "dd-api-key", "x-amz-date", "x-amz-content-sha256", "transfer-encoding"}

// Validate checks s and its secrets and returns a *ValidationError naming every problem.
func Validate(s *Stream, sec *Secrets) error {
	var errs []FieldError
	bad := func(field, code string) { errs = append(errs, FieldError{field, code}) }
	if s.OrganizationID != "" && !event.ValidOrgID(s.OrganizationID) {
		bad("organization_id", "must be 1-64 letters, digits, '_' or '-' (or absent for every organization)")
	}
	if n := len(s.Name); n < 1 || n > 128 {
		bad("name", "must be 1-128 characters")
	}
	if s.State != StateActive && s.State != StatePaused {
		bad("state", "must be active or paused")
	}
	d := &s.Destination
	needURL := func(optional bool) {
		if d.URL == "" && optional {
			return
		}
		u, err := url.Parse(d.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" || len(d.URL) > 2048 {
			bad("destination.url", "must be an http or https URL without credentials")
		}
	}
	needSecret := func(field, v string) {
		if v == "" || len(v) > 4096 {
			bad("destination."+field, "is required")
		}
	}
	switch d.Type {
	case TypeHTTP:
		needURL(false)
		if sec.SigningSecret != "" && !ValidSigningSecret(sec.SigningSecret) {
			bad("destination.signing_secret", "must be whsec_ followed by the base64 of 24 to 64 bytes")
		}
	case TypeSplunk:
		needURL(false)
		needSecret("token", sec.Token)
		for field, v := range map[string]string{"index": d.Index, "source": d.Source, "sourcetype": d.SourceType} {
			if v != "" && !plainField.MatchString(v) {
				bad("destination."+field, "must be at most 128 letters, digits, spaces or _.:/-")
			}
		}
	case TypeS3:
		if !bucketName.MatchString(d.Bucket) {
			bad("destination.bucket", "must be an S3 bucket name")
		}
		if !regionName.MatchString(d.Region) {
			bad("destination.region", "is required (us-east-1, …)")
		}
		if !prefixString.MatchString(d.Prefix) || strings.Contains(d.Prefix, "..") {
			bad("destination.prefix", "must be at most 256 letters, digits or _.=/-")
		}
		if d.Endpoint != "" {
			u, err := url.Parse(d.Endpoint)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
				bad("destination.endpoint", "must be an http or https URL without credentials")
			}
		}
		if d.AccessKeyID == "" || len(d.AccessKeyID) > 128 {
			bad("destination.access_key_id", "is required")
		}
		needSecret("secret_access_key", sec.SecretAccessKey)
	case TypeDatadog:
		needURL(true)
		if d.Site == "" {
			d.Site = "datadoghq.com"
		}
		if !siteName.MatchString(d.Site) {
			bad("destination.site", "must be a Datadog site such as datadoghq.com or datadoghq.eu")
		}
		needSecret("api_key", sec.APIKey)
		if len(d.Tags) > 1024 || len(d.Service) > 128 {
			bad("destination.tags", "tags at most 1024 and service at most 128 characters")
		}
	case TypeOTLP:
		needURL(false)
	default:
		bad("destination.type", "must be one of "+strings.Join(Types, ", "))
	}
	if len(sec.Headers) > 0 && d.Type != TypeHTTP && d.Type != TypeOTLP {
		bad("destination.headers", "apply only to http and otlp destinations")
	}
	if len(sec.Headers) > 16 {
		bad("destination.headers", "at most 16")
	}
	for name, v := range sec.Headers {
		if !headerName.MatchString(name) || slices.Contains(reservedHeaders, strings.ToLower(name)) {
			bad("destination.headers", fmt.Sprintf("%q is not a header Logbook lets you set", name))
		}
		if len(v) > 4096 || strings.ContainsAny(v, "\r\n\x00") {
			bad("destination.headers", fmt.Sprintf("the value of %q must be one line of at most 4096 bytes", name))
		}
	}
	d.HeaderNames = d.HeaderNames[:0]
	for name := range sec.Headers {
		d.HeaderNames = append(d.HeaderNames, name)
	}
	slices.Sort(d.HeaderNames)
	if len(d.HeaderNames) == 0 {
		d.HeaderNames = nil
	}
	b := s.Batch
	if b.MaxEvents < 0 || b.MaxEvents > MaxBatchEvents {
		bad("batch.max_events", fmt.Sprintf("must be from 1 to %d", MaxBatchEvents))
	}
	if b.MaxBytes < 0 || (b.MaxBytes > 0 && b.MaxBytes < 4096) || b.MaxBytes > MaxBatchBytes {
		bad("batch.max_bytes", fmt.Sprintf("must be from 4096 to %d", MaxBatchBytes))
	}
	if b.LingerMS < 0 || time.Duration(b.LingerMS)*time.Millisecond > MaxLinger {
		bad("batch.linger_ms", fmt.Sprintf("must be from 1 to %d", MaxLinger.Milliseconds()))
	}
	if len(errs) > 0 {
		return &ValidationError{Errors: errs}
	}
	return nil
}

// ErrNotFound is returned for a stream (or rule) that does not exist.
var ErrNotFound = errors.New("log stream not found")

// Subject is the valid-stream subject filter of s: its organization's, or every organization's.
func (s *Stream) Subject() string {
	if s.OrganizationID == "" {
		return event.ValidSubjects
	}
	return event.ValidSubject(s.OrganizationID)
}
