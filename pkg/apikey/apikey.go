// Package apikey keeps Logbook's API keys: named records holding a SHA-256 hash of the key (never
// the key), its scopes and organizations, in the JetStream key-value bucket logbook_api_keys. Every
// gateway and query API replica watches the bucket (Verifier), so a key created or revoked anywhere
// takes effect everywhere within the watch's delay (milliseconds).
//
// Bucket layout:
//
//	key.<name>      the key's record (Key as JSON)
//	used.<hash>     when the key was last used (updated at most once a minute per key and replica)
//	revoked.<hash>  a revoked key's tombstone: LOGBOOK_API_KEY may not bring it back
//	bootstrap       marker: the installation has had its first key (generated or preset)
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"time"

	"github.com/logbookhq/logbook/pkg/event"
)

// MinKeyLen is the shortest key Logbook accepts from LOGBOOK_API_KEY.
const MinKeyLen = 32

// EnvName names the key LOGBOOK_API_KEY presets; DefaultName the key generated on a first start
// without one.
const (
	EnvName     = "env"
	DefaultName = "default"
)

// Where a key came from.
const (
	SourceEnv       = "env"       // LOGBOOK_API_KEY
	SourceGenerated = "generated" // first start without LOGBOOK_API_KEY
	SourceCreated   = "created"   // POST /admin/keys or `logbook keys create`
	SourceLegacy    = "legacy"    // a key stored before keys had names
)

// Scope is a permission a key may be limited to. A key without scopes has every scope, as a
// WorkOS key does.
type Scope string

// The scopes. ScopeAdmin implies every other scope and is needed for /admin/… and for reading the
// self-audit organization.
const (
	ScopeAdmin          Scope = "admin"
	ScopeEventsWrite    Scope = "events:write"    // send events (single and bulk)
	ScopeEventsRead     Scope = "events:read"     // list and get events, exports, viewer links
	ScopeSchemasWrite   Scope = "schemas:write"   // register schemas
	ScopeSchemasRead    Scope = "schemas:read"    // list schemas and actions
	ScopeRetentionWrite Scope = "retention:write" // change an organization's retention
	ScopeRetentionRead  Scope = "retention:read"  // read retention and audit-log configuration
)

// ScopeRead is a shorthand accepted when creating a key: every read scope.
const ScopeRead = "read"

// Scopes lists every scope, for documentation and checks.
var Scopes = []Scope{ScopeAdmin, ScopeEventsWrite, ScopeEventsRead, ScopeSchemasWrite, ScopeSchemasRead, ScopeRetentionWrite, ScopeRetentionRead}

var readScopes = []Scope{ScopeEventsRead, ScopeSchemasRead, ScopeRetentionRead}

// Key is a key's record. It never holds the key itself.
type Key struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix"` // the key's first PrefixLen characters, to recognise it in lists
	Hash   string `json:"hash"`   // hex SHA-256 of the key
	// Scopes limit what the key may do; empty means every scope.
	Scopes []Scope `json:"scopes,omitempty"`
	// Organizations limit which organizations the key may name; empty means all of them.
	Organizations []string  `json:"organizations,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	Source        string    `json:"source"`
}

// Allows reports whether k has scope s: keys without scopes and admin keys have every scope, except
// that admin (environment-wide by nature) is never a key's that is limited to organizations.
func (k *Key) Allows(s Scope) bool {
	if s == ScopeAdmin && !k.EnvironmentWide() {
		return false
	}
	return len(k.Scopes) == 0 || slices.Contains(k.Scopes, ScopeAdmin) || slices.Contains(k.Scopes, s)
}

// EnvironmentWide reports whether k may act for every organization (it is not limited to some).
func (k *Key) EnvironmentWide() bool { return len(k.Organizations) == 0 }

// MayName reports whether k may act for org: an organization-limited key only for its own; the
// self-audit organization only an admin key (or a viewer link made for it by one).
func (k *Key) MayName(org string) bool {
	if slices.Contains(k.Organizations, org) {
		return true
	}
	if org == event.SelfAuditOrgID {
		return k.EnvironmentWide() && k.Allows(ScopeAdmin)
	}
	return k.EnvironmentWide()
}

// Hash returns the stored form of a key: hex SHA-256. Keys are long random strings (generated ones
// carry 238 bits, preset ones at least 32 characters), so a fast hash is enough.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// PrefixLen is how many leading characters of a key its record keeps for lists ("sk_AbCd").
const PrefixLen = 7

func prefix(key string) string { return key[:min(PrefixLen, len(key)/4)] }

const (
	keyAlphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	generatedLen = 40
)

// GeneratedBits is the entropy of a generated key: 40 characters drawn uniformly from 62, about
// 238 bits (the 4 characters a listing shows leave about 214 unknown).
var GeneratedBits = generatedLen * math.Log2(float64(len(keyAlphabet)))

// Generate returns a new random key: "sk_" and 40 base-62 characters from crypto/rand, each drawn
// uniformly (no modulo bias).
func Generate() (string, error) {
	b := make([]byte, generatedLen)
	n := big.NewInt(int64(len(keyAlphabet)))
	for i := range b {
		r, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", fmt.Errorf("failed to generate api key: %w", err)
		}
		b[i] = keyAlphabet[r.Int64()]
	}
	return "sk_" + string(b), nil
}

// namePattern is what a key name may look like: it becomes a key-value key token.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidName reports whether name can name a key.
func ValidName(name string) bool { return namePattern.MatchString(name) }
