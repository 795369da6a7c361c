// Package export runs audit-log exports: POST /audit_logs/exports records a job and answers
// "pending"; a background worker streams the organization's matching events as CSV (bounded
// memory: rows flow from ClickHouse through the CSV encoder into the object store in chunks) into
// the JetStream object store logbook_exports, so any replica can serve the file; GET
// /audit_logs/exports/{id} then answers "ready" with a signed link that downloads the CSV without
// an API key for 10 minutes (a fresh link on every GET).
//
// Jobs live in the key-value bucket logbook_exports. A worker holds a job through a lease it keeps
// renewing; a job whose lease ran out (its process died) is picked up again by any replica's sweep,
// up to MaxAttempts times, and then marked "error".
package export

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/settle"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/wire"
)

// Job states, as the WorkOS API names them.
const (
	StatePending = "pending"
	StateReady   = "ready"
	StateError   = "error"
)

// DownloadWriteTimeout is how long one write of a download may take: a download goes on for as
// long as its client keeps reading.
const DownloadWriteTimeout = 60 * time.Second

// DownloadMaxTime bounds a download's wait for the stored file's chunks. nats.go gives each read
// of an object the context's deadline, or 5 seconds when there is none: a pause of the chunks
// longer than that (a busy server; make bench's 10M export, 2 GB) cut the download mid-file. The
// client leaving ends a download sooner.
const DownloadMaxTime = time.Hour

// Limits on a create-export request.
const (
	MaxBodyBytes      = 64 << 10
	MaxFilterValues   = 100
	MaxFilterValueLen = 512
	MaxTextLen        = 200
)

// Config tunes exports.
type Config struct {
	// PublicURL is the scheme://host[:port] download links start with. Empty: the scheme and Host
	// of the GET request that asks for the export (right when clients reach Logbook directly).
	PublicURL string
	// LinkTTL is how long a download link works. Default 10 minutes (WorkOS's).
	LinkTTL time.Duration
	// Lease is how long a worker holds a job without renewing it. Default 30 s.
	Lease time.Duration
	// Sweep is how often pending jobs with an expired lease are looked for. Default 10 s.
	Sweep time.Duration
	// MaxAttempts is how often a job is tried before it is marked "error". Default 3.
	MaxAttempts int
	// Workers is how many exports one process runs at once. Default 2.
	Workers int
	// StoredWait is how long an attempt waits for the pipeline to store every event acknowledged
	// before the export was requested (LOGBOOK_EXPORT_STORED_WAIT). Past it the attempt fails and
	// the job is tried again (up to MaxAttempts, then "error"): an export never holds a silent
	// subset. Default 60 s.
	StoredWait time.Duration
	// MaxPerOrg is how many exports an organization may have in progress at once, across all
	// replicas (LOGBOOK_EXPORT_MAX_PER_ORG); beyond it a request is refused with 429. Default 3;
	// 0: no cap.
	MaxPerOrg int
	// StoreMaxBytes caps the object store of export files (LOGBOOK_EXPORT_STORE_MAX_BYTES): an
	// export that does not fit fails, and a request while the store is full is refused with 507.
	// Default 5 GiB; 0: no cap. JetStream reserves the cap on disk.
	StoreMaxBytes int64
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{LinkTTL: 10 * time.Minute, Lease: 30 * time.Second, Sweep: 10 * time.Second, MaxAttempts: 3, Workers: 2,
		StoredWait: 60 * time.Second, MaxPerOrg: 3, StoreMaxBytes: 5 << 30}
}

// ConfigFromEnv reads LOGBOOK_PUBLIC_URL, LOGBOOK_EXPORT_STORED_WAIT, LOGBOOK_EXPORT_MAX_PER_ORG
// and LOGBOOK_EXPORT_STORE_MAX_BYTES over DefaultConfig; problems are recorded in env.
func ConfigFromEnv(env *config.Env) Config {
	c := DefaultConfig()
	c.PublicURL = env.BaseURL("LOGBOOK_PUBLIC_URL", "")
	c.StoredWait = env.Duration("LOGBOOK_EXPORT_STORED_WAIT", c.StoredWait)
	c.MaxPerOrg = int(env.Int("LOGBOOK_EXPORT_MAX_PER_ORG", int64(c.MaxPerOrg), 0, 10_000))
	c.StoreMaxBytes = env.Int("LOGBOOK_EXPORT_STORE_MAX_BYTES", c.StoreMaxBytes, 0, 1<<50)
	return c
}

// Filter is what an export selects, beyond its organization.
type Filter struct {
	RangeStart  time.Time `json:"range_start"`
	RangeEnd    time.Time `json:"range_end"`
	Actions     []string  `json:"actions,omitempty"`
	ActorNames  []string  `json:"actor_names,omitempty"`
	ActorIDs    []string  `json:"actor_ids,omitempty"`
	TargetTypes []string  `json:"targets,omitempty"`
	// Logbook's own, beyond WorkOS: the rest of the search filters and the file format.
	ActorTypes []string `json:"actor_types,omitempty"`
	TargetIDs  []string `json:"target_ids,omitempty"`
	Text       string   `json:"q,omitempty"`
	// Format is "csv" (the default, as WorkOS) or "ndjson" (one API event object per line).
	Format string `json:"format,omitempty"`
}

// Export file formats.
const (
	FormatCSV    = "csv"
	FormatNDJSON = "ndjson"
)

func (f *Filter) format() string {
	if f.Format == FormatNDJSON {
		return FormatNDJSON
	}
	return FormatCSV
}

func (f *Filter) contentType() string {
	if f.format() == FormatNDJSON {
		return "application/x-ndjson"
	}
	return "text/csv; charset=utf-8"
}

// Job is an export as the bucket holds it.
type Job struct {
	ID             string    `json:"id"`
	OrganizationID string    `json:"organization_id"`
	Filter         Filter    `json:"filter"`
	State          string    `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Attempts       int       `json:"attempts"`
	LeaseOwner     string    `json:"lease_owner,omitempty"`
	LeaseUntil     time.Time `json:"lease_until,omitzero"`
	Error          string    `json:"error,omitempty"`
	Rows           int64     `json:"rows,omitempty"`
	// Stored is the pipeline's position when the export was requested: the job reads ClickHouse
	// only once everything acknowledged before it is stored. Kept in the job, so a replica that
	// resumes it waits for the same point.
	Stored *settle.Point `json:"stored,omitempty"`
	// Slot is the key of the organization's export slot the job holds while it is pending.
	Slot string `json:"slot,omitempty"`
}

// events streams an organization's events: a *store.Store.
type events interface {
	Each(ctx context.Context, f store.Filter, desc bool, fn func(*store.Event) error) error
}

// Retention answers an organization's current retention in days (0: none): a *retention.Policies.
type Retention interface {
	Days(org string) uint16
}

// pipeline tells when what was acknowledged up to a point is stored: a *settle.Waiter.
type pipeline interface {
	Mark(ctx context.Context) (settle.Point, error)
	Wait(ctx context.Context, p *settle.Point, progress func(settle.Point)) error
}

// Service serves and runs exports. Safe for concurrent use.
type Service struct {
	jobs      jetstream.KeyValue
	pipeline  pipeline
	files     jetstream.ObjectStore
	secret    []byte
	events    events
	retention Retention
	cfg       Config
	log       *slog.Logger
	owner     string
	queue     chan string
	now       func() time.Time
	audit     auditor
}

// auditor records administrative changes before they are made: a *selfaudit.Recorder. Its error
// is the answer to give (a 503).
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// UseAudit makes every export request recorded in the self-audit organization before the job
// exists. Without it, nothing is recorded (selfaudit.Discard).
func (s *Service) UseAudit(a auditor) { s.audit = a }

// secretKey names the signing key in the secrets bucket.
const secretKey = "export-link-signing-key"

// Open opens the jobs bucket, the object store and the link-signing key (generated by the first
// replica that needs it, then shared through the secrets bucket).
func Open(ctx context.Context, js jetstream.JetStream, ev events, ret Retention, cfg Config, log *slog.Logger) (*Service, error) {
	jobs, err := js.KeyValue(ctx, event.BucketExports)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketExports, err)
	}
	files, err := js.ObjectStore(ctx, event.ObjectsExports)
	if err != nil {
		return nil, fmt.Errorf("failed to open object store %s: %w", event.ObjectsExports, err)
	}
	secret, err := natsx.SharedSecret(ctx, js, secretKey)
	if err != nil {
		return nil, err
	}
	if err := capStore(ctx, js, cfg.StoreMaxBytes); err != nil {
		return nil, err
	}
	var owner [8]byte
	_, _ = rand.Read(owner[:])
	return &Service{
		jobs: jobs, pipeline: settle.New(js), files: files, secret: secret, events: ev, retention: ret, cfg: cfg, log: log,
		owner: hex.EncodeToString(owner[:]), queue: make(chan string, 1000), now: time.Now, audit: selfaudit.Discard,
	}, nil
}

// Register adds the API-key routes to g, each needing events:read.
func (s *Service) Register(g *echo.Group) {
	read := wire.Need(apikey.ScopeEventsRead)
	g.POST("/audit_logs/exports", s.create, read)
	g.GET("/audit_logs/exports/:id", s.get, read)
}

// RegisterDownload adds the download route to e, outside API-key authentication: the signature in
// the link is the credential.
func (s *Service) RegisterDownload(e *echo.Echo) {
	e.GET("/audit_logs/exports/:id/download", s.download)
}

var idPattern = regexp.MustCompile(`^audit_log_export_[0-9A-Z]{26}$`)

// exportJSON is the audit_log_export object of the WorkOS API.
type exportJSON struct {
	Object    string  `json:"object"`
	ID        string  `json:"id"`
	State     string  `json:"state"`
	URL       *string `json:"url,omitempty"`
	CreatedAt string  `json:"created_at"`
	UpdatedAt string  `json:"updated_at"`
}

func (j *Job) json(link string) exportJSON {
	out := exportJSON{Object: "audit_log_export", ID: j.ID, State: j.State,
		CreatedAt: event.FormatTime(j.CreatedAt), UpdatedAt: event.FormatTime(j.UpdatedAt)}
	if link != "" {
		out.URL = &link
	}
	return out
}

func (s *Service) create(c echo.Context) error {
	body, err := wire.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	org, f, err := ParseRequest(body)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := wire.AllowOrg(ctx, org); err != nil {
		return err
	}
	// Everything acknowledged before this request goes into the export: remember where the
	// pipeline stands now, and let the job wait for it.
	mark, err := s.pipeline.Mark(ctx)
	if err != nil {
		s.log.Warn("export not created: the pipeline's position is unknown", "err", err)
		return wire.Unavailable("The export could not be created right now; retry shortly.", 1)
	}
	if full, err := s.storeFull(ctx); err != nil {
		s.log.Warn("export not created: the export store's size is unknown", "err", err)
		return wire.Unavailable("The export could not be created right now; retry shortly.", 1)
	} else if full {
		return storeFullError(s.cfg.StoreMaxBytes)
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	j := &Job{
		ID:             "audit_log_export_" + ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(),
		OrganizationID: org, Filter: *f, State: StatePending, CreatedAt: now, UpdatedAt: now, Stored: &mark,
	}
	if j.Slot, err = s.takeSlot(ctx, org, j.ID); errors.Is(err, errNoSlot) {
		return tooManyExports(org, s.cfg.MaxPerOrg)
	} else if err != nil {
		s.log.Warn("export not created: no slot", "err", err)
		return wire.Unavailable("The export could not be created right now; retry shortly.", 1)
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("failed to encode export job: %w", err)
	}
	// On record before the job exists (pkg/selfaudit): no record, no export.
	if err := s.audit.Record(ctx, selfaudit.Entry{
		Action: selfaudit.ExportRequested,
		Targets: []event.Entity{
			{ID: org, Type: selfaudit.TargetOrganization},
			{ID: j.ID, Type: selfaudit.TargetExport},
		},
		Metadata: map[string]any{
			"range_start": event.FormatTime(f.RangeStart),
			"range_end":   event.FormatTime(f.RangeEnd),
			"format":      f.format(),
		},
	}); err != nil {
		s.releaseSlot(context.WithoutCancel(ctx), j)
		return err
	}
	if _, err := s.jobs.Create(ctx, j.ID, raw); err != nil {
		s.log.Warn("export job not stored", "err", err)
		s.releaseSlot(context.WithoutCancel(ctx), j)
		return wire.Unavailable("The export could not be created right now; retry shortly.", 1)
	}
	select {
	case s.queue <- j.ID:
	default: // the sweep finds it
	}
	return c.JSON(http.StatusCreated, j.json(""))
}

func (s *Service) get(c echo.Context) error {
	j, _, err := s.load(c.Request().Context(), c)
	if err != nil {
		return err
	}
	if wire.AllowOrg(c.Request().Context(), j.OrganizationID) != nil {
		return wire.NotFound(fmt.Sprintf("Audit Log Export not found: '%s'.", j.ID)) // another organization's: not there
	}
	link := ""
	if j.State == StateReady {
		link = s.link(c, j.ID)
	}
	return c.JSON(http.StatusOK, j.json(link))
}

// load reads the job named by the :id path parameter.
func (s *Service) load(ctx context.Context, c echo.Context) (*Job, uint64, error) {
	id, err := wire.PathParam(c, "id")
	notFound := wire.NotFound(fmt.Sprintf("Audit Log Export not found: '%s'.", truncate(c.Param("id"), 80)))
	if err != nil || !idPattern.MatchString(id) {
		return nil, 0, notFound
	}
	j, rev, err := s.read(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, notFound
	}
	if err != nil {
		return nil, 0, wire.Unavailable("Exports are unavailable right now; retry shortly.", 1)
	}
	return j, rev, nil
}

func (s *Service) read(ctx context.Context, id string) (*Job, uint64, error) {
	e, err := s.jobs.Get(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("failed to decode export job %s: %w", id, err)
	}
	return &j, e.Revision(), nil
}

// link returns a download URL for id that works for LinkTTL.
func (s *Service) link(c echo.Context, id string) string {
	base := s.cfg.PublicURL
	if base == "" {
		scheme := "http"
		if c.Request().TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + c.Request().Host
	}
	expires := strconv.FormatInt(s.now().Add(s.cfg.LinkTTL).Unix(), 10)
	q := url.Values{"expires": {expires}, "signature": {s.sign(id, expires)}}
	return base + "/audit_logs/exports/" + id + "/download?" + q.Encode()
}

func (s *Service) sign(id, expires string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("logbook export link\n" + id + "\n" + expires))
	return hex.EncodeToString(m.Sum(nil))
}

// download streams a ready export's CSV to whoever holds a valid, unexpired link.
func (s *Service) download(c echo.Context) error {
	id, err := wire.PathParam(c, "id")
	if err != nil || !idPattern.MatchString(id) {
		return wire.NotFound("Audit Log Export not found.")
	}
	expires := c.QueryParam("expires")
	sig, _ := hex.DecodeString(c.QueryParam("signature"))
	want, _ := hex.DecodeString(s.sign(id, expires))
	if !hmac.Equal(sig, want) {
		return wire.Forbidden("invalid_signature", "The download link is not valid.")
	}
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil || s.now().Unix() > exp {
		return wire.Forbidden("link_expired", "The download link has expired; get the export again for a new one.")
	}
	ctx := c.Request().Context()
	j, _, err := s.read(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && j.State != StateReady) {
		return wire.NotFound(fmt.Sprintf("Audit Log Export not found: '%s'.", id))
	}
	if err != nil {
		return wire.Unavailable("Exports are unavailable right now; retry shortly.", 1)
	}
	ctx, cancel := context.WithTimeout(ctx, DownloadMaxTime)
	defer cancel()
	obj, err := s.files.Get(ctx, objectName(j))
	if err != nil {
		return wire.Unavailable("The export file is unavailable right now; retry shortly.", 1)
	}
	defer obj.Close()
	info, err := obj.Info()
	if err != nil {
		return wire.Unavailable("The export file is unavailable right now; retry shortly.", 1)
	}
	h := c.Response().Header()
	// The declared length makes a file cut off mid-way a broken response (net/http closes the
	// connection on a short body), never the clean end of a shorter CSV.
	h.Set(echo.HeaderContentLength, strconv.FormatUint(info.Size, 10))
	h.Set(echo.HeaderContentType, j.Filter.contentType())
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+objectName(j)+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	c.Response().WriteHeader(http.StatusOK)
	// A large file streams for as long as it takes: no whole-response deadline, but each write
	// must finish within DownloadWriteTimeout (a client that stopped reading is let go).
	if _, err := io.Copy(wire.Streaming(c, DownloadWriteTimeout), obj); err != nil {
		s.log.Warn("export download interrupted", "export_id", id, "err", err)
	}
	return nil
}

func objectName(j *Job) string { return j.ID + "." + j.Filter.format() }

// Run works on exports until ctx ends: Workers goroutines take jobs created here, and a sweep
// takes pending jobs whose lease has run out (created elsewhere, or left by a process that died).
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < max(1, s.cfg.Workers); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-s.queue:
					s.work(ctx, id)
				}
			}
		}()
	}
	t := time.NewTicker(s.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			s.sweep(ctx)
		}
	}
}

// sweep queues every pending job no live worker holds.
func (s *Service) sweep(ctx context.Context) {
	lister, err := s.jobs.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			s.log.Warn("export sweep failed", "err", err)
		}
		return
	}
	now := s.now()
	for id := range lister.Keys() {
		if strings.HasPrefix(id, slotPrefix) {
			continue
		}
		j, _, err := s.read(ctx, id)
		if err != nil || j.State != StatePending || now.Before(j.LeaseUntil) {
			continue
		}
		select {
		case s.queue <- id:
		default:
			return
		}
	}
}

// work claims job id (if it is pending and free), runs it, and records the outcome.
func (s *Service) work(ctx context.Context, id string) {
	j, rev, ok := s.claim(ctx, id)
	if !ok {
		return
	}
	log := s.log.With("export_id", id, "org_id", j.OrganizationID, "attempt", j.Attempts)
	lease := &leaseHolder{s: s, job: j, rev: rev}
	rctx, cancel := context.WithCancel(ctx)
	stopRenew := lease.keep(rctx, cancel)
	err := s.waitStored(rctx, j, lease)
	var rows int64
	if err == nil {
		rows, err = s.produce(rctx, j)
	}
	cancel()
	stopRenew()
	if lease.lost() {
		log.Warn("export lease lost; another worker owns the job now")
		return
	}
	j, rev = lease.current()
	now := s.now().UTC().Truncate(time.Millisecond)
	j.LeaseOwner, j.LeaseUntil, j.UpdatedAt = "", time.Time{}, now
	var limit *store.LimitError
	switch {
	case err == nil:
		j.State, j.Rows = StateReady, rows
		log.Info("export ready", "rows", rows)
	case ctx.Err() != nil:
		return // shutting down: the lease runs out and another replica takes the job
	case isStoreFull(err):
		j.State = StateError
		j.Error = fmt.Sprintf("the export does not fit in the export store (%d bytes, LOGBOOK_EXPORT_STORE_MAX_BYTES)", s.cfg.StoreMaxBytes)
		log.Warn("export does not fit in the export store", "err", err)
	case errors.As(err, &limit):
		// Trying again would hit the same limit: the export fails at once, naming it.
		j.State = StateError
		j.Error = fmt.Sprintf("the export went past its %s limit of %s (LOGBOOK_EXPORT_%s); narrow its range or filters",
			limit.Setting(), limit.Describe(), strings.ToUpper(limit.Setting()))
		log.Warn("export stopped by its limit", "err", err)
	case j.Attempts >= s.cfg.MaxAttempts:
		j.State, j.Error = StateError, err.Error()
		log.Error("export failed for good", "err", err)
	default:
		log.Warn("export failed; will retry", "err", err)
		j.Error = err.Error()
	}
	if _, err := s.update(context.WithoutCancel(ctx), j, rev); err != nil {
		log.Warn("export state not recorded; the sweep retries the job", "err", err)
	} else if j.State != StatePending {
		s.releaseSlot(context.WithoutCancel(ctx), j)
	}
	if j.State == StatePending {
		select {
		case s.queue <- id:
		default:
		}
	}
}

// claim takes the job's lease if the job is pending and nobody holds it. A job that has used up
// its attempts is marked "error" instead.
func (s *Service) claim(ctx context.Context, id string) (*Job, uint64, bool) {
	j, rev, err := s.read(ctx, id)
	if err != nil || j.State != StatePending {
		return nil, 0, false
	}
	now := s.now().UTC()
	if now.Before(j.LeaseUntil) { // a worker (perhaps one of ours) holds it
		return nil, 0, false
	}
	if j.Attempts >= s.cfg.MaxAttempts {
		j.State, j.UpdatedAt = StateError, now.Truncate(time.Millisecond)
		if j.Error == "" {
			j.Error = "the export was interrupted too often"
		}
		j.LeaseOwner, j.LeaseUntil = "", time.Time{}
		if _, err := s.update(ctx, j, rev); err == nil {
			s.releaseSlot(ctx, j)
		}
		return nil, 0, false
	}
	j.Attempts++
	j.LeaseOwner, j.LeaseUntil = s.owner, now.Add(s.cfg.Lease)
	rev, err = s.update(ctx, j, rev)
	if err != nil {
		return nil, 0, false
	}
	return j, rev, true
}

func (s *Service) update(ctx context.Context, j *Job, rev uint64) (uint64, error) {
	raw, err := json.Marshal(j)
	if err != nil {
		return 0, fmt.Errorf("failed to encode export job: %w", err)
	}
	return s.jobs.Update(ctx, j.ID, raw, rev)
}

// waitStored waits, up to StoredWait, until the pipeline has stored everything acknowledged
// before the job was requested, recording in the job how far the pipeline got.
func (s *Service) waitStored(ctx context.Context, j *Job, lease *leaseHolder) error {
	if j.Stored == nil { // a job recorded before exports waited
		return nil
	}
	p := *j.Stored
	wctx, cancel := context.WithTimeout(ctx, s.cfg.StoredWait)
	defer cancel()
	err := s.pipeline.Wait(wctx, &p, func(p settle.Point) {
		lease.record(ctx, func(j *Job) { j.Stored = &p })
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("the events acknowledged before the export were not all stored within %s (the pipeline is behind): %w", s.cfg.StoredWait, err)
	}
	return err
}

// produce streams the job's events as CSV into the object store and returns the row count.
func (s *Service) produce(ctx context.Context, j *Job) (int64, error) {
	f := store.Filter{
		Org: j.OrganizationID, Start: j.Filter.RangeStart, End: j.Filter.RangeEnd,
		Actions: j.Filter.Actions, ActorNames: j.Filter.ActorNames, ActorIDs: j.Filter.ActorIDs,
		TargetTypes: j.Filter.TargetTypes, ActorTypes: j.Filter.ActorTypes, TargetIDs: j.Filter.TargetIDs,
		Text: j.Filter.Text, RetentionDays: s.retention.Days(j.OrganizationID),
	}
	pr, pw := io.Pipe()
	var rows int64
	go func() {
		// Whole object-store chunks through the pipe: one hand-over per 128 KiB, not per 4 KiB
		// write of the CSV encoder (csv.Writer and the NDJSON writer use this buffer as theirs).
		w, err := newWriter(j.Filter.format(), bufio.NewWriterSize(pw, chunkSize))
		if err == nil {
			err = s.events.Each(ctx, f, false, w.write)
			rows = w.count()
			err = errors.Join(err, w.flush())
		}
		pw.CloseWithError(err)
	}()
	_, err := s.files.Put(ctx, jetstream.ObjectMeta{
		Name:        objectName(j),
		Opts:        &jetstream.ObjectMetaOptions{ChunkSize: chunkSize},
		Description: "audit log export of " + j.OrganizationID,
		Headers:     map[string][]string{"Content-Type": {j.Filter.contentType()}},
	}, fullReader{pr})
	_ = pr.CloseWithError(err)
	if err != nil {
		// A chunk refused (the store is full) may still leave the small meta record stored after
		// it: no half file stays listed.
		_ = s.files.Delete(context.WithoutCancel(ctx), objectName(j))
		return 0, fmt.Errorf("failed to write export %s: %w", j.ID, err)
	}
	return rows, nil
}

// fullReader fills every buffer it is given (until EOF). The object store makes one chunk (one
// stream message, one disk sync) of each Read; a pipe hands over what each Write held, a few KB of
// CSV, so without this an export of millions of rows became tens of thousands of tiny chunks and
// outran JetStream's limit of pending asynchronous publishes.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}

// leaseHolder renews a job's lease while it runs and notices when it is lost.
type leaseHolder struct {
	s    *Service
	mu   sync.Mutex
	job  *Job
	rev  uint64
	gone bool
}

func (l *leaseHolder) keep(ctx context.Context, lost context.CancelFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.s.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			l.mu.Lock()
			j := *l.job
			j.LeaseUntil = l.s.now().UTC().Add(l.s.cfg.Lease)
			rev, err := l.s.update(ctx, &j, l.rev)
			if err == nil {
				l.job, l.rev = &j, rev
			} else if ctx.Err() == nil {
				l.gone = true
				lost()
			}
			l.mu.Unlock()
		}
	}()
	return func() { <-done }
}

// record changes the job and stores the change at once (with the lease's revision check).
func (l *leaseHolder) record(ctx context.Context, change func(*Job)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j := *l.job
	change(&j)
	rev, err := l.s.update(ctx, &j, l.rev)
	if err != nil {
		l.s.log.Warn("export progress not recorded", "export_id", j.ID, "err", err)
		return // the next renewal notices a lost lease
	}
	l.job, l.rev = &j, rev
}

func (l *leaseHolder) lost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gone
}

func (l *leaseHolder) current() (*Job, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j := *l.job
	return &j, l.rev
}

// ParseRequest reads a create-export body: organization_id, range_start and range_end (RFC 3339)
// required; actions, actor_names, actor_ids, targets (target types) and the deprecated actors (=
// actor_names) optional lists of strings. Structural problems are a 422 with field errors; a range
// that does not parse or is not ordered is a 400 invalid_audit_log_export_range_date.
func ParseRequest(body []byte) (string, *Filter, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || dec.More() || obj == nil {
		return "", nil, wire.BadRequest("invalid_request_body", "The body must be one JSON object.", nil)
	}
	var errs []map[string]string
	add := func(field, code string) { errs = append(errs, map[string]string{"field": field, "code": code}) }
	f := &Filter{}
	lists := map[string]*[]string{
		"actions": &f.Actions, "actor_names": &f.ActorNames, "actors": &f.ActorNames,
		"actor_ids": &f.ActorIDs, "targets": &f.TargetTypes, "actor_types": &f.ActorTypes, "target_ids": &f.TargetIDs,
	}
	str := func(k string) string {
		v, present := obj[k]
		s, ok := v.(string)
		switch {
		case !present || v == nil || (ok && s == ""):
			add(k, k+" is required")
		case !ok:
			add(k, k+" must be a string")
		case len(s) > 64 || !utf8.ValidString(s):
			add(k, k+" is too long")
			return ""
		}
		return s
	}
	org := str("organization_id")
	if org != "" && !event.ValidOrgID(org) {
		add("organization_id", "organization_id may contain only letters, digits, '_' and '-' (at most 64)")
	}
	start, end := str("range_start"), str("range_end")
	for k, v := range obj {
		switch k {
		case "organization_id", "range_start", "range_end":
			continue
		case "format":
			if v, _ := v.(string); v != FormatCSV && v != FormatNDJSON {
				add(k, "format must be csv or ndjson")
			} else {
				f.Format = v
			}
			continue
		case "q":
			if v, ok := v.(string); !ok || len(v) > MaxTextLen || !utf8.ValidString(v) {
				add(k, fmt.Sprintf("q must be a string of at most %d bytes", MaxTextLen))
			} else {
				f.Text = v
			}
			continue
		}
		dst, ok := lists[k]
		if !ok {
			add(k, k+" is not a known field")
			continue
		}
		if v == nil {
			continue
		}
		items, ok := v.([]any)
		if !ok {
			add(k, k+" must be an array of strings")
			continue
		}
		if len(items) > MaxFilterValues {
			add(k, fmt.Sprintf("%s may have at most %d items", k, MaxFilterValues))
			continue
		}
		for _, it := range items {
			s, ok := it.(string)
			if !ok || s == "" || len(s) > MaxFilterValueLen || !utf8.ValidString(s) {
				add(k, fmt.Sprintf("%s must hold strings of 1 to %d bytes", k, MaxFilterValueLen))
				break
			}
			*dst = append(*dst, s)
		}
	}
	if len(errs) > 0 {
		return "", nil, wire.Unprocessable("unprocessable_entity", "Validation failed.", errs)
	}
	var err1, err2 error
	f.RangeStart, err1 = time.Parse(time.RFC3339Nano, start)
	f.RangeEnd, err2 = time.Parse(time.RFC3339Nano, end)
	switch {
	case err1 != nil || err2 != nil:
		return "", nil, rangeError("range_start and range_end must be ISO 8601 date-times such as 2026-01-01T00:00:00.000Z.")
	case !f.RangeStart.Before(f.RangeEnd):
		return "", nil, rangeError("range_start must be before range_end.")
	case f.RangeStart.Year() < 1970 || f.RangeEnd.Year() > 9999:
		return "", nil, rangeError("The range must lie between 1970 and 9999.")
	}
	f.RangeStart, f.RangeEnd = f.RangeStart.UTC(), f.RangeEnd.UTC()
	return org, f, nil
}

func rangeError(msg string) error {
	return wire.BadRequest("invalid_audit_log_export_range_date", "Invalid date range: "+msg,
		[]map[string]string{{"field": "range_start", "code": msg}})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
