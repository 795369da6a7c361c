package export

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/wire"
)

// An organization's exports in progress are capped (Config.MaxPerOrg): each holds one of the
// organization's slots, a key "slot.<org>.<n>" in the jobs bucket whose value is the job's id.
// A slot is taken with a create-if-absent (or, when its job has finished or is gone, a
// revision-checked update), so concurrent requests on any replica never take more slots than
// there are; it is given back when the job is ready or failed.
const slotPrefix = "slot."

func slotKey(org string, n int) string { return slotPrefix + org + "." + strconv.Itoa(n) }

// errNoSlot is a create refused because the organization has MaxPerOrg exports in progress.
var errNoSlot = errors.New("no free export slot")

// takeSlot claims a free slot of org for job id and returns its key ("" when exports are not
// capped), or errNoSlot.
func (s *Service) takeSlot(ctx context.Context, org, id string) (string, error) {
	if s.cfg.MaxPerOrg <= 0 {
		return "", nil
	}
	for n := range s.cfg.MaxPerOrg {
		key := slotKey(org, n)
		_, err := s.jobs.Create(ctx, key, []byte(id))
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", err
		}
		held, err := s.jobs.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // given back meanwhile: the next request takes it
		}
		if err != nil {
			return "", err
		}
		if s.inProgress(ctx, string(held.Value())) {
			continue
		}
		if _, err := s.jobs.Update(ctx, key, []byte(id), held.Revision()); err == nil {
			return key, nil
		}
	}
	return "", errNoSlot
}

// inProgress reports whether job id is still pending (an unreadable job counts as pending).
func (s *Service) inProgress(ctx context.Context, id string) bool {
	j, _, err := s.read(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	return err != nil || j.State == StatePending
}

// releaseSlot gives back j's slot, if it still holds it.
func (s *Service) releaseSlot(ctx context.Context, j *Job) {
	if j.Slot == "" {
		return
	}
	held, err := s.jobs.Get(ctx, j.Slot)
	if err != nil || string(held.Value()) != j.ID {
		return
	}
	if err := s.jobs.Delete(ctx, j.Slot, jetstream.LastRevision(held.Revision())); err != nil {
		s.log.Debug("export slot not given back; the next request reclaims it", "export_id", j.ID, "err", err)
	}
}

func tooManyExports(org string, max int) *wire.Error {
	return &wire.Error{Status: http.StatusTooManyRequests, Code: "too_many_exports", RetryAfter: 10,
		Message: fmt.Sprintf("Organization %s has %d exports in progress, the most it may have (LOGBOOK_EXPORT_MAX_PER_ORG); "+
			"retry once one is ready.", org, max)}
}

// The export files are capped (Config.StoreMaxBytes): the object store's stream refuses what
// would take it past the cap (discard new), so an export that does not fit fails at once, and a
// request while the store is full is refused with 507.

// objectStream is the stream behind the object store of export files.
const objectStream = "OBJ_" + event.ObjectsExports

// chunkSize is the object store's chunk size (its default): a store with less room than that
// holds no further export.
const chunkSize = 128 << 10

// capStore sets the object store's cap to max bytes (0: no cap) if it differs.
func capStore(ctx context.Context, js jetstream.JetStream, max int64) error {
	st, err := js.Stream(ctx, objectStream)
	if err != nil {
		return fmt.Errorf("failed to open stream %s: %w", objectStream, err)
	}
	cfg := st.CachedInfo().Config
	want := max
	if want <= 0 {
		want = -1
	}
	if cfg.MaxBytes == want {
		return nil
	}
	cfg.MaxBytes = want
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("failed to cap the export store at %d bytes (LOGBOOK_EXPORT_STORE_MAX_BYTES): %w", max, err)
	}
	return nil
}

// storeFull reports whether the export store has less than a chunk of room left.
func (s *Service) storeFull(ctx context.Context) (bool, error) {
	if s.cfg.StoreMaxBytes <= 0 {
		return false, nil
	}
	st, err := s.files.Status(ctx)
	if err != nil {
		return false, err
	}
	return int64(st.Size())+chunkSize > s.cfg.StoreMaxBytes, nil
}

func storeFullError(max int64) *wire.Error {
	return &wire.Error{Status: http.StatusInsufficientStorage, Code: "export_store_full",
		Message: fmt.Sprintf("The export store is full (%d bytes, LOGBOOK_EXPORT_STORE_MAX_BYTES); "+
			"exports are deleted 7 days after they are made. Retry later or ask the operator for more room.", max)}
}

// isStoreFull reports whether err is JetStream refusing a chunk because the store is at its cap.
func isStoreFull(err error) bool {
	return err != nil && strings.Contains(err.Error(), "maximum bytes exceeded")
}
