// Package apikey keeps API keys as SHA-256 hashes in a JetStream key-value bucket, so every
// gateway and query API replica accepts the same keys and no process stores a key in the clear.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// MinKeyLen is the shortest key Logbook accepts from LOGBOOK_API_KEY.
const MinKeyLen = 16

const (
	hashPrefix   = "sha256/"
	bootstrapKey = "bootstrap"
)

// Hash returns the stored form of a key.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Ensure makes sure the bucket holds at least one key. With preset (LOGBOOK_API_KEY) it stores
// that key's hash and returns "". Without one, the first process to find the bucket empty
// generates a key, stores its hash and returns the key so the caller can print it once; later
// starts return "" (the key was shown before).
func Ensure(ctx context.Context, js jetstream.JetStream, preset string) (string, error) {
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	if err != nil {
		return "", fmt.Errorf("failed to open bucket %s: %w", event.BucketAPIKeys, err)
	}
	if preset != "" {
		if len(preset) < MinKeyLen {
			return "", fmt.Errorf("LOGBOOK_API_KEY must be at least %d characters", MinKeyLen)
		}
		if _, err := kv.Put(ctx, hashPrefix+Hash(preset), []byte("preset")); err != nil {
			return "", fmt.Errorf("failed to store api key hash: %w", err)
		}
		return "", nil
	}
	// One generated key per installation: the bootstrap marker elects the generator.
	if _, err := kv.Create(ctx, bootstrapKey, []byte("generated")); errors.Is(err, jetstream.ErrKeyExists) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to claim api key bootstrap: %w", err)
	}
	key, err := Generate()
	if err != nil {
		return "", err
	}
	if _, err := kv.Put(ctx, hashPrefix+Hash(key), []byte("generated")); err != nil {
		return "", fmt.Errorf("failed to store api key hash: %w", err)
	}
	return key, nil
}

// Generate returns a new random key: "sk_" and 40 base-62 characters (238 bits).
func Generate() (string, error) {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 40)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", fmt.Errorf("failed to generate api key: %w", err)
		}
		b[i] = alphabet[n.Int64()]
	}
	return "sk_" + string(b), nil
}

// Verifier answers whether a key is known. It watches the bucket, so a key added or deleted there
// takes effect on every replica. Safe for concurrent use.
type Verifier struct {
	mu     sync.RWMutex
	hashes map[string]bool
	m      *natsx.Mirror
}

// NewVerifier loads the key hashes and keeps watching until Close.
func NewVerifier(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Verifier, error) {
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketAPIKeys, err)
	}
	v := &Verifier{hashes: map[string]bool{}}
	v.m, err = natsx.WatchBucket(ctx, kv, func(e jetstream.KeyValueEntry) {
		hash, ok := strings.CutPrefix(e.Key(), hashPrefix)
		if !ok {
			return
		}
		v.mu.Lock()
		v.hashes[hash] = e.Operation() == jetstream.KeyValuePut
		v.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("failed to load api keys: %w", err)
	}
	return v, nil
}

// Valid reports whether key is a known API key. Only hashes are compared, so the comparison
// reveals nothing about stored keys through timing.
func (v *Verifier) Valid(key string) bool {
	if key == "" {
		return false
	}
	h := Hash(key)
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.hashes[h]
}

// Close stops the watch.
func (v *Verifier) Close() { v.m.Stop() }
