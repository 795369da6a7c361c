package portal

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// Why a viewer token was refused.
var (
	// ErrBadToken: malformed, or its signature is not ours (forged or altered).
	ErrBadToken = errors.New("viewer link is not valid")
	// ErrExpired: genuine, but past its expiry.
	ErrExpired = errors.New("viewer link has expired")
)

// Links signs and verifies viewer tokens: "<organization>.<expiry, unix seconds>.<signature>",
// the signature being HMAC-SHA256 over both with a key only Logbook holds. A token grants reading
// one organization's events until its expiry, nothing else. Organization ids cannot contain dots
// (event.ValidOrgID), so the token splits unambiguously. Safe for concurrent use.
type Links struct {
	key []byte
	now func() time.Time
}

// NewLinks returns Links signing with key (at least 32 bytes).
func NewLinks(key []byte) (*Links, error) {
	if len(key) < 32 {
		return nil, errors.New("viewer link signing key must be at least 32 bytes")
	}
	return &Links{key: key, now: time.Now}, nil
}

// signingKeyName names the viewer-link key in the secrets bucket (event.BucketSecrets).
const signingKeyName = "portal-link-signing-key"

// LoadLinks returns Links with the key kept in the secrets bucket: the first replica to need it
// generates 32 random bytes and stores them (create-if-absent, so concurrent starts agree), and
// every replica then reads the same key. Deleting the key from the bucket and restarting the query
// APIs rotates it, which invalidates every outstanding link.
func LoadLinks(ctx context.Context, js jetstream.JetStream) (*Links, error) {
	key, err := natsx.SharedSecret(ctx, js, signingKeyName)
	if err != nil {
		return nil, fmt.Errorf("failed to load the viewer link key: %w", err)
	}
	return NewLinks(key)
}

// Issue returns a token for org that expires at expires (truncated to the second).
func (l *Links) Issue(org string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return org + "." + exp + "." + l.mac("viewer", org, exp)
}

// Verify returns the organization a token grants and when it expires, or ErrBadToken or
// ErrExpired.
func (l *Links) Verify(token string) (org string, expires time.Time, err error) {
	parts := strings.Split(token, ".")
	if len(token) > 256 || len(parts) != 3 || !event.ValidOrgID(parts[0]) {
		return "", time.Time{}, ErrBadToken
	}
	if !l.check(parts[2], "viewer", parts[0], parts[1]) {
		return "", time.Time{}, ErrBadToken
	}
	sec, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", time.Time{}, ErrBadToken
	}
	expires = time.Unix(sec, 0).UTC()
	if !l.now().Before(expires) {
		return "", time.Time{}, ErrExpired
	}
	return parts[0], expires, nil
}

// handle binds an export id to the organization that created it through the portal, so a viewer
// can only poll exports of its own organization.
func (l *Links) handle(org, exportID string) string { return l.mac("export", org, exportID) }

func (l *Links) checkHandle(h, org, exportID string) bool { return l.check(h, "export", org, exportID) }

func (l *Links) mac(purpose string, fields ...string) string {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte("logbook portal " + purpose))
	for _, f := range fields {
		m.Write([]byte{0})
		m.Write([]byte(f))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (l *Links) check(sig, purpose string, fields ...string) bool {
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	want, _ := base64.RawURLEncoding.DecodeString(l.mac(purpose, fields...))
	return hmac.Equal(got, want)
}
