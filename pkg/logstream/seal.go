package logstream

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// Sealer encrypts destination secrets at rest with AES-256-GCM under a key kept in the secrets
// bucket, bound to the stream (or rule) id they belong to, so a sealed value copied to another
// stream does not open. Safe for concurrent use.
type Sealer struct{ aead cipher.AEAD }

const sealVersion = "v1."

// NewSealer returns a Sealer with key (32 bytes).
func NewSealer(key []byte) (*Sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil || len(key) != 32 {
		return nil, errors.New("log stream secret key must be 32 bytes")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("failed to set up secret sealing: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// LoadSealer returns the Sealer whose key is SecretKeyName in the secrets bucket: the first
// process to need it generates 32 random bytes (create-if-absent, so concurrent starts agree).
// Whoever can read the secrets bucket can open sealed secrets; the point is that stream records,
// their copies and backups of the streams bucket hold none in the clear.
func LoadSealer(ctx context.Context, js jetstream.JetStream) (*Sealer, error) {
	key, err := natsx.SharedSecret(ctx, js, SecretKeyName)
	if err != nil {
		return nil, fmt.Errorf("failed to load the log stream secret key: %w", err)
	}
	return NewSealer(key)
}

// Seal encrypts v (JSON-encoded) for owner.
func (s *Sealer) Seal(owner string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("failed to encode secrets: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("failed to seal secrets: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(owner))
	return sealVersion + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open decrypts sealed, which Seal made for owner, into v.
func (s *Sealer) Open(owner, sealed string, v any) error {
	if sealed == "" {
		return nil
	}
	raw, ok := strings.CutPrefix(sealed, sealVersion)
	if !ok {
		return errors.New("sealed secrets of an unknown version")
	}
	b, err := base64.RawStdEncoding.DecodeString(raw)
	if err != nil || len(b) < s.aead.NonceSize() {
		return errors.New("sealed secrets are malformed")
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(owner))
	if err != nil {
		return fmt.Errorf("failed to open the secrets of %s (was the key %s replaced?): %w", owner, SecretKeyName, err)
	}
	return json.Unmarshal(plain, v)
}

// ValidSigningSecret reports whether s is a Standard Webhooks secret: "whsec_" and the base64
// of 24 to 64 bytes.
func ValidSigningSecret(s string) bool {
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	return err == nil && len(b) >= 24 && len(b) <= 64
}

// NewSigningSecret returns a fresh Standard Webhooks secret of 32 random bytes.
func NewSigningSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}
