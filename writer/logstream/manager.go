package logstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// Manager runs the shippers of the streams this replica holds a lease on. Every writer replica
// runs one; each stream is delivered by exactly one replica at a time (its lease holder), which is
// what keeps delivery in order. Safe for concurrent use.
type Manager struct {
	js     jetstream.JetStream
	st     *logstream.Store
	db     reader
	cfg    Config
	log    *slog.Logger
	client *http.Client
	holder string
	now    func() time.Time

	mu      sync.Mutex
	streams map[string]*managed
	wg      sync.WaitGroup
}

// managed is one stream known to the Manager.
type managed struct {
	rec      *logstream.Record
	shipper  *shipper // nil unless this replica holds the lease
	stop     context.CancelFunc
	done     chan struct{}
	leaseRev uint64
	until    time.Time
}

// lease is the value of lease.<id>.
type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// NewManager returns a Manager delivering the streams of st's bucket, catching up from db.
func NewManager(js jetstream.JetStream, st *logstream.Store, db reader, cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &Manager{
		js: js, st: st, db: db, cfg: cfg, log: log, now: time.Now,
		client:  &http.Client{Timeout: cfg.RequestTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		holder:  fmt.Sprintf("%s/%d/%s", host, os.Getpid(), nuid.Next()),
		streams: map[string]*managed{},
	}, nil
}

// Run watches the streams bucket and keeps this replica's shippers running until ctx ends; then it
// stops them (each finishes or hands back its batch) and gives up its leases.
func (m *Manager) Run(ctx context.Context) error {
	w, err := m.st.KV().WatchFiltered(ctx, []string{logstream.PrefixStream + ">", logstream.PrefixReplay + ">"})
	if err != nil {
		return fmt.Errorf("failed to watch bucket %s: %w", logstream.Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer tick.Stop()
	defer m.stopAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("log stream watch ended")
			}
			if e != nil {
				m.apply(ctx, e)
			} else {
				m.leases(ctx)
			}
		case <-tick.C:
			m.leases(ctx)
		}
	}
}

// apply takes a change of the bucket: a stream created, changed or deleted, or a replay request.
func (m *Manager) apply(ctx context.Context, e jetstream.KeyValueEntry) {
	key := e.Key()
	if id, ok := strings.CutPrefix(key, logstream.PrefixReplay); ok {
		m.mu.Lock()
		if s := m.streams[id]; s != nil && s.shipper != nil {
			s.shipper.poke()
		}
		m.mu.Unlock()
		return
	}
	id := strings.TrimPrefix(key, logstream.PrefixStream)
	if e.Operation() != jetstream.KeyValuePut {
		m.mu.Lock()
		s := m.streams[id]
		delete(m.streams, id)
		m.mu.Unlock()
		if s != nil {
			m.stopShipper(s)
			m.releaseLease(id, s)
		}
		// The API deleted the consumers and the status already; a shipper stopping just now may
		// have created a consumer (a hand-over) or stored its status since: remove them again.
		if err := logstream.DeleteConsumers(ctx, m.js, id, ""); err != nil {
			m.log.Warn("failed to delete the consumers of a deleted log stream", "log_stream", id, "err", err)
		}
		if s != nil {
			_ = m.st.KV().Purge(ctx, logstream.PrefixStatus+id)
		}
		return
	}
	rec, err := logstream.DecodeRecord(e.Value())
	if err != nil {
		m.log.Error("unreadable log stream record", "key", key, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.streams[id]
	if s == nil {
		m.streams[id] = &managed{rec: rec}
		return
	}
	s.rec = rec
	if s.shipper != nil {
		s.shipper.update(rec)
	}
}

// leases renews the leases this replica holds, takes free or expired ones, and starts and stops
// shippers accordingly.
func (m *Manager) leases(ctx context.Context) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.streams))
	for id := range m.streams {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.mu.Lock()
		s := m.streams[id]
		m.mu.Unlock()
		if s == nil {
			continue
		}
		rev, until, err := m.claim(ctx, id, s.leaseRev)
		if err != nil {
			if s.shipper != nil && (m.now().After(s.until) || errors.Is(err, errLeaseHeld)) {
				m.log.Warn("log stream lease lost", "log_stream", id, "err", err)
				m.stopShipper(s)
				s.leaseRev = 0
			}
			continue
		}
		m.mu.Lock()
		s.leaseRev, s.until = rev, until
		if s.shipper == nil && m.streams[id] == s {
			m.startShipper(ctx, s)
		}
		m.mu.Unlock()
	}
}

var errLeaseHeld = errors.New("lease held by another replica")

// claim takes or renews stream id's lease: created if absent, updated (revision-checked) if this
// replica holds it (rev) or it has expired.
func (m *Manager) claim(ctx context.Context, id string, rev uint64) (uint64, time.Time, error) {
	kv := m.st.KV()
	until := m.now().Add(m.cfg.LeaseTTL)
	val, _ := json.Marshal(lease{Holder: m.holder, Until: until})
	key := logstream.PrefixLease + id
	if rev != 0 {
		nrev, err := kv.Update(ctx, key, val, rev)
		if err == nil {
			return nrev, until, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, time.Time{}, err
		}
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		nrev, err := kv.Create(ctx, key, val)
		if err != nil {
			return 0, time.Time{}, errLeaseHeld
		}
		return nrev, until, nil
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	var cur lease
	_ = json.Unmarshal(e.Value(), &cur)
	if cur.Holder != m.holder && m.now().Before(cur.Until) {
		return 0, time.Time{}, errLeaseHeld
	}
	nrev, err := kv.Update(ctx, key, val, e.Revision())
	if err != nil {
		return 0, time.Time{}, errLeaseHeld
	}
	return nrev, until, nil
}

// startShipper starts s's shipper; m.mu is held.
func (m *Manager) startShipper(ctx context.Context, s *managed) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.shipper = newShipper(m.js, m.st, m.db, m.cfg, m.client, s.rec, m.log)
	s.stop, s.done = cancel, make(chan struct{})
	m.wg.Add(1)
	go func(sh *shipper, done chan struct{}) {
		defer m.wg.Done()
		defer close(done)
		sh.run(sctx)
	}(s.shipper, s.done)
}

// stopShipper stops s's shipper and waits for it.
func (m *Manager) stopShipper(s *managed) {
	m.mu.Lock()
	stop, done := s.stop, s.done
	s.shipper, s.stop, s.done = nil, nil, nil
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (m *Manager) releaseLease(id string, s *managed) {
	if s.leaseRev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.st.KV().Delete(ctx, logstream.PrefixLease+id, jetstream.LastRevision(s.leaseRev))
	s.leaseRev = 0
}

// stopAll stops every shipper and gives up their leases, so another replica takes over at once.
func (m *Manager) stopAll() {
	m.mu.Lock()
	all := make(map[string]*managed, len(m.streams))
	for id, s := range m.streams {
		all[id] = s
	}
	m.mu.Unlock()
	for id, s := range all {
		m.stopShipper(s)
		m.releaseLease(id, s)
	}
	m.wg.Wait()
}

// Streams returns the streams the Manager knows (for metrics).
func (m *Manager) Streams() []*logstream.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*logstream.Record, 0, len(m.streams))
	for _, s := range m.streams {
		out = append(out, s.rec)
	}
	return out
}
