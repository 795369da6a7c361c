package apikey

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// DefaultUsageFlush is how often a Verifier stores when its keys were last used.
const DefaultUsageFlush = time.Minute

// VerifierConfig tunes a Verifier.
type VerifierConfig struct {
	// UsageFlush is how often the last use of each key this process saw is written to the bucket:
	// one write per used key per interval, never one per request. Default DefaultUsageFlush.
	UsageFlush time.Duration
}

// Verifier answers which key a request presents. It mirrors the bucket through a watch, so a key
// created or revoked by any process takes effect here as soon as the watch delivers the change
// (milliseconds); it remembers when each key was last used and stores that once per UsageFlush.
// Safe for concurrent use.
type Verifier struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	cfg    VerifierConfig
	now    func() time.Time
	mu     sync.RWMutex
	byHash map[string]*entry
	byName map[string]string    // name -> hash
	stored map[string]time.Time // hash -> last use as the bucket holds it
	m      *natsx.Mirror
	stop   context.CancelFunc
	done   chan struct{}
}

type entry struct {
	key     *Key
	used    atomic.Int64 // unix seconds of the last use this process saw
	flushed atomic.Int64 // the value of used last written
}

// NewVerifier loads the keys and keeps watching until Close. cfg is optional.
func NewVerifier(ctx context.Context, js jetstream.JetStream, log *slog.Logger, cfg ...VerifierConfig) (*Verifier, error) {
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketAPIKeys, err)
	}
	v := &Verifier{kv: kv, log: log, now: time.Now, byHash: map[string]*entry{}, byName: map[string]string{},
		stored: map[string]time.Time{}, done: make(chan struct{})}
	if len(cfg) > 0 {
		v.cfg = cfg[0]
	}
	if v.cfg.UsageFlush <= 0 {
		v.cfg.UsageFlush = DefaultUsageFlush
	}
	v.m, err = natsx.WatchBucket(ctx, kv, v.apply)
	if err != nil {
		return nil, fmt.Errorf("failed to load api keys: %w", err)
	}
	fctx, stop := context.WithCancel(context.Background())
	v.stop = stop
	go v.flushLoop(fctx)
	return v, nil
}

func (v *Verifier) apply(e jetstream.KeyValueEntry) {
	put := e.Operation() == jetstream.KeyValuePut
	v.mu.Lock()
	defer v.mu.Unlock()
	if name, ok := strings.CutPrefix(e.Key(), recordPrefix); ok {
		if old, ok := v.byName[name]; ok {
			delete(v.byHash, old)
			delete(v.byName, name)
		}
		if !put {
			return
		}
		var k Key
		if err := json.Unmarshal(e.Value(), &k); err != nil || k.Hash == "" {
			v.log.Error("skipping unreadable api key", "key", e.Key(), "err", err)
			return
		}
		v.byHash[k.Hash] = &entry{key: &k}
		v.byName[name] = k.Hash
		return
	}
	if hash, ok := strings.CutPrefix(e.Key(), usedPrefix); ok {
		if !put {
			delete(v.stored, hash)
			return
		}
		if t, err := parseUsed(e.Value()); err == nil {
			v.stored[hash] = t
		}
	}
}

// Lookup returns the record of key, or false when no such key exists (never was, or revoked).
// Only hashes are compared (a map lookup), so timing reveals nothing about stored keys. The use is
// remembered in memory; Lookup never writes to the bucket.
func (v *Verifier) Lookup(key string) (*Key, bool) {
	if key == "" {
		return nil, false
	}
	h := Hash(key)
	v.mu.RLock()
	e := v.byHash[h]
	v.mu.RUnlock()
	if e == nil {
		return nil, false
	}
	if now := v.now().Unix(); e.used.Load() < now {
		e.used.Store(now)
	}
	return e.key, true
}

// Await waits until this verifier accepts (present) or refuses (!present) the key whose hash is
// hash, or ctx ends: a process that created or revoked a key answers only once its own checks agree.
func (v *Verifier) Await(ctx context.Context, hash string, present bool) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		v.mu.RLock()
		_, ok := v.byHash[hash]
		v.mu.RUnlock()
		if ok == present {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Valid reports whether key is a known API key.
func (v *Verifier) Valid(key string) bool {
	_, ok := v.Lookup(key)
	return ok
}

func (v *Verifier) flushLoop(ctx context.Context) {
	defer close(v.done)
	t := time.NewTicker(v.cfg.UsageFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.Flush(ctx)
		}
	}
}

// Flush stores the last use of every key used since the previous flush, one write per key, unless
// the bucket already holds a later use (another replica's). Errors are logged; the next flush
// tries again.
func (v *Verifier) Flush(ctx context.Context) {
	type due struct {
		hash string
		e    *entry
		at   int64
	}
	var todo []due
	v.mu.RLock()
	for h, e := range v.byHash {
		at := e.used.Load()
		if at > e.flushed.Load() && at > v.stored[h].Unix() {
			todo = append(todo, due{h, e, at})
		}
	}
	v.mu.RUnlock()
	for _, d := range todo {
		val := time.Unix(d.at, 0).UTC().Format(time.RFC3339)
		if _, err := v.kv.Put(ctx, usedPrefix+d.hash, []byte(val)); err != nil {
			if ctx.Err() == nil {
				v.log.Warn("failed to store api key use", "key_name", d.e.key.Name, "err", err)
			}
			continue
		}
		d.e.flushed.Store(d.at)
	}
}

// Close stores the uses not yet stored and stops the watch.
func (v *Verifier) Close() {
	v.stop()
	<-v.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	v.Flush(ctx)
	cancel()
	v.m.Stop()
}
