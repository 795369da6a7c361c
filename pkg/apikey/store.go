package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
)

// Bucket keys (see the package comment).
const (
	recordPrefix  = "key."
	usedPrefix    = "used."
	revokedPrefix = "revoked."
	bootstrapKey  = "bootstrap"
	legacyPrefix  = "sha256/" // keys stored before records had names: sha256/<hash>
)

// Errors of the Store.
var (
	ErrNotFound = errors.New("no such api key")
	ErrExists   = errors.New("an api key with this name exists")
	// ErrPresetRevoked: LOGBOOK_API_KEY names a key that was revoked (or replaced).
	ErrPresetRevoked = errors.New("LOGBOOK_API_KEY holds a key that was revoked: set a new key")
)

// Store reads and changes the key records in the bucket. Safe for concurrent use.
type Store struct {
	kv     jetstream.KeyValue
	now    func() time.Time
	before func(ctx context.Context, c Change) error
}

// Change is a change Ensure makes at start-up on its own (the route and the command record theirs
// themselves): a key created (Revoked false) or revoked, and why.
type Change struct {
	Key     *Key
	Revoked bool
	Reason  string
}

// Reasons of start-up changes.
const (
	ReasonEnvSet      = "LOGBOOK_API_KEY set"
	ReasonEnvChanged  = "LOGBOOK_API_KEY changed"
	ReasonFirstStart  = "first start without LOGBOOK_API_KEY"
	ReasonMigrated    = "unnamed key of an earlier version named"
	ReasonPreviousEnv = "unnamed earlier LOGBOOK_API_KEY revoked"
)

// BeforeChange makes Ensure call fn before each change it makes (to record it first); an error
// from fn stops Ensure before that change.
func (s *Store) BeforeChange(fn func(ctx context.Context, c Change) error) { s.before = fn }

func (s *Store) announce(ctx context.Context, k *Key, revoked bool, reason string) error {
	if s.before == nil {
		return nil
	}
	if err := s.before(ctx, Change{Key: k, Revoked: revoked, Reason: reason}); err != nil {
		return fmt.Errorf("failed to record the change of api key %s (%s): %w", k.Name, reason, err)
	}
	return nil
}

// Open opens the keys bucket (natsx.Prepare creates it).
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, event.BucketAPIKeys)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", event.BucketAPIKeys, err)
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// PresetFromEnv reads LOGBOOK_API_KEY and records a problem in env when it is shorter than
// MinKeyLen (the message gives its length, never the key).
func PresetFromEnv(env *config.Env) string {
	key := env.String("LOGBOOK_API_KEY", "")
	if key != "" && len(key) < MinKeyLen {
		env.Fail("LOGBOOK_API_KEY", fmt.Sprintf("<%d characters>", len(key)),
			fmt.Sprintf("must be at least %d characters (make one with: openssl rand -hex 24)", MinKeyLen))
	}
	return key
}

// Ensure runs at every start of a process that checks keys. With preset (LOGBOOK_API_KEY) it makes
// that the key named "env": on the first start it is created; when the variable changed since, the
// previous env key is revoked and replaced; a preset that was revoked is refused (ErrPresetRevoked).
// Without preset, the first process of an installation generates the key "default" and returns it
// to be shown once; later starts return "" and leave the keys as they are. Keys stored before keys
// had names are given names (or, for a previous LOGBOOK_API_KEY, revoked).
func Ensure(ctx context.Context, js jetstream.JetStream, preset string) (string, error) {
	s, err := Open(ctx, js)
	if err != nil {
		return "", err
	}
	return s.Ensure(ctx, preset)
}

// Ensure is the package-level Ensure on s.
func (s *Store) Ensure(ctx context.Context, preset string) (string, error) {
	if preset != "" && len(preset) < MinKeyLen {
		return "", fmt.Errorf("LOGBOOK_API_KEY must be at least %d characters", MinKeyLen)
	}
	if err := s.migrate(ctx, preset); err != nil {
		return "", err
	}
	if preset != "" {
		if err := s.ensureEnv(ctx, preset); err != nil {
			return "", err
		}
		// A preset installation never generates a key later.
		if _, err := s.kv.Create(ctx, bootstrapKey, []byte(SourceEnv)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("failed to mark api key bootstrap: %w", err)
		}
		return "", nil
	}
	if _, err := s.kv.Create(ctx, bootstrapKey, []byte(SourceGenerated)); errors.Is(err, jetstream.ErrKeyExists) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to claim api key bootstrap: %w", err)
	}
	key, err := Generate()
	if err != nil {
		return "", err
	}
	k := s.record(DefaultName, key, SourceGenerated, nil, nil)
	if err := s.announce(ctx, k, false, ReasonFirstStart); err != nil {
		return "", err
	}
	if err := s.create(ctx, k); err != nil {
		return "", err
	}
	return key, nil
}

func (s *Store) record(name, key, source string, scopes []Scope, orgs []string) *Key {
	return &Key{Name: name, Prefix: prefix(key), Hash: Hash(key), Scopes: scopes, Organizations: orgs,
		CreatedAt: s.now().UTC().Truncate(time.Second), Source: source}
}

func (s *Store) ensureEnv(ctx context.Context, preset string) error {
	want := s.record(EnvName, preset, SourceEnv, nil, nil)
	for range 10 {
		if revoked, err := s.isRevoked(ctx, want.Hash); err != nil {
			return err
		} else if revoked {
			return ErrPresetRevoked
		}
		cur, rev, err := s.get(ctx, EnvName)
		switch {
		case errors.Is(err, ErrNotFound):
			if err := s.checkUnique(ctx, want); err != nil {
				return err
			}
			if err := s.announce(ctx, want, false, ReasonEnvSet); err != nil {
				return err
			}
			if err := s.create(ctx, want); errors.Is(err, ErrExists) {
				continue // another replica started at the same moment
			} else if err != nil {
				return err
			}
			return nil
		case err != nil:
			return err
		case cur.Hash == want.Hash:
			return nil
		}
		// The variable changed: the previous env key is revoked, then replaced.
		if err := s.checkUnique(ctx, want); err != nil {
			return err
		}
		if err := s.announce(ctx, cur, true, ReasonEnvChanged); err != nil {
			return err
		}
		if err := s.announce(ctx, want, false, ReasonEnvChanged); err != nil {
			return err
		}
		if err := s.tombstone(ctx, cur); err != nil {
			return err
		}
		raw, _ := json.Marshal(want)
		if _, err := s.kv.Update(ctx, recordPrefix+EnvName, raw, rev); err != nil {
			if isConflict(err) {
				continue
			}
			return fmt.Errorf("failed to replace the env api key: %w", err)
		}
		_ = s.kv.Delete(ctx, usedPrefix+cur.Hash)
		return nil
	}
	return errors.New("failed to store the env api key: too many concurrent changes")
}

// checkUnique refuses a preset that is already another key's (two records for one hash would make
// revoking one of them ambiguous).
func (s *Store) checkUnique(ctx context.Context, want *Key) error {
	keys, err := s.records(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Hash == want.Hash && k.Name != want.Name {
			return fmt.Errorf("LOGBOOK_API_KEY is already the key named %q: choose another key", k.Name)
		}
	}
	return nil
}

// migrate turns the unnamed keys of earlier versions (sha256/<hash>) into records: the current
// LOGBOOK_API_KEY becomes "env", a previous LOGBOOK_API_KEY is revoked (the variable changed), and
// any other key (a generated one, or a preset while no LOGBOOK_API_KEY is set now) becomes
// "legacy-<first 8 hex digits of its hash>".
func (s *Store) migrate(ctx context.Context, preset string) error {
	names, err := s.keys(ctx)
	if err != nil {
		return err
	}
	presetHash := ""
	if preset != "" {
		presetHash = Hash(preset)
	}
	for _, name := range names {
		h, ok := strings.CutPrefix(name, legacyPrefix)
		if !ok {
			continue
		}
		e, err := s.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return fmt.Errorf("failed to read api key %s: %w", name, err)
		}
		k := &Key{Name: "legacy-" + h[:min(8, len(h))], Hash: h, CreatedAt: e.Created().UTC().Truncate(time.Second), Source: SourceLegacy}
		switch {
		case h == presetHash:
			k.Name, k.Prefix, k.Source = EnvName, prefix(preset), SourceEnv
			fallthrough
		case preset == "" || string(e.Value()) != "preset":
			if err := s.announce(ctx, k, false, ReasonMigrated); err != nil {
				return err
			}
			if err := s.create(ctx, k); err != nil && !errors.Is(err, ErrExists) {
				return err
			}
		default: // a previous LOGBOOK_API_KEY
			if err := s.announce(ctx, k, true, ReasonPreviousEnv); err != nil {
				return err
			}
			if err := s.tombstone(ctx, k); err != nil {
				return err
			}
		}
		if err := s.kv.Delete(ctx, name); err != nil {
			return fmt.Errorf("failed to remove migrated api key %s: %w", name, err)
		}
	}
	return nil
}

// Get returns the record of the key called name, or ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (*Key, error) {
	k, _, err := s.get(ctx, name)
	return k, err
}

func (s *Store) get(ctx context.Context, name string) (*Key, uint64, error) {
	if !ValidName(name) {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, recordPrefix+name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read api key %s: %w", name, err)
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return nil, 0, fmt.Errorf("failed to decode api key %s: %w", name, err)
	}
	return &k, e.Revision(), nil
}

// Create stores a new key called spec.Name for secret (made with Generate) and returns its record;
// ErrExists when the name is taken, a *FieldError when spec is not valid.
func (s *Store) Create(ctx context.Context, spec Spec, secret string) (*Key, error) {
	scopes, err := spec.Check()
	if err != nil {
		return nil, err
	}
	orgs := slices.Clone(spec.Organizations)
	slices.Sort(orgs)
	k := s.record(spec.Name, secret, SourceCreated, scopes, slices.Compact(orgs))
	if err := s.checkUnique(ctx, k); err != nil {
		return nil, err
	}
	if err := s.create(ctx, k); err != nil {
		return nil, err
	}
	return k, nil
}

func (s *Store) create(ctx context.Context, k *Key) error {
	raw, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("failed to encode api key %s: %w", k.Name, err)
	}
	if _, err := s.kv.Create(ctx, recordPrefix+k.Name, raw); errors.Is(err, jetstream.ErrKeyExists) {
		return ErrExists
	} else if err != nil {
		return fmt.Errorf("failed to store api key %s: %w", k.Name, err)
	}
	return nil
}

// Revoke removes the key called name from every replica (they drop it as their watch sees the
// delete) and keeps a tombstone of its hash. It returns the key's record; ErrNotFound if there is
// no such key.
func (s *Store) Revoke(ctx context.Context, name string) (*Key, error) {
	for range 10 {
		k, rev, err := s.get(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := s.tombstone(ctx, k); err != nil {
			return nil, err
		}
		// Only this revision: a record replaced meanwhile (a new env key) is not removed unseen.
		if err := s.kv.Delete(ctx, recordPrefix+name, jetstream.LastRevision(rev)); isConflict(err) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("failed to revoke api key %s: %w", name, err)
		}
		_ = s.kv.Delete(ctx, usedPrefix+k.Hash) // best effort: an orphan is never read
		return k, nil
	}
	return nil, fmt.Errorf("failed to revoke api key %s: too many concurrent changes", name)
}

type tombstone struct {
	Name      string    `json:"name"`
	RevokedAt time.Time `json:"revoked_at"`
}

func (s *Store) tombstone(ctx context.Context, k *Key) error {
	raw, _ := json.Marshal(tombstone{Name: k.Name, RevokedAt: s.now().UTC()})
	if _, err := s.kv.Put(ctx, revokedPrefix+k.Hash, raw); err != nil {
		return fmt.Errorf("failed to record the revocation of api key %s: %w", k.Name, err)
	}
	return nil
}

func (s *Store) isRevoked(ctx context.Context, hash string) (bool, error) {
	_, err := s.kv.Get(ctx, revokedPrefix+hash)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("failed to read api key revocations: %w", err)
	}
	return true, nil
}

// Listed is a key's record with when it was last used (zero: never, as far as recorded).
type Listed struct {
	Key
	LastUsed time.Time
}

// List returns every key, oldest first. LastUsed lags actual use by up to the verifiers' flush
// interval (a minute by default).
func (s *Store) List(ctx context.Context) ([]Listed, error) {
	keys, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(keys))
	for _, k := range keys {
		l := Listed{Key: *k}
		if e, err := s.kv.Get(ctx, usedPrefix+k.Hash); err == nil {
			l.LastUsed, _ = parseUsed(e.Value())
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("failed to read api key use: %w", err)
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Listed) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

func (s *Store) records(ctx context.Context) ([]*Key, error) {
	names, err := s.keys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Key
	for _, name := range names {
		n, ok := strings.CutPrefix(name, recordPrefix)
		if !ok {
			continue
		}
		k, _, err := s.get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // revoked meanwhile
		} else if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// keys lists the bucket's keys (a few per API key: the bucket stays small).
func (s *Store) keys(ctx context.Context) ([]string, error) {
	l, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list bucket %s: %w", event.BucketAPIKeys, err)
	}
	var names []string
	for k := range l.Keys() {
		names = append(names, k)
	}
	return names, nil
}

func parseUsed(v []byte) (time.Time, error) { return time.Parse(time.RFC3339, string(v)) }

// isConflict reports a failed compare-and-set (the record changed since it was read); replicated
// streams answer another error code than single ones.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
