package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// A raw message delivered again (Config.IsolateAfter) was held by a process that died or stopped
// before settling it. Since messages in hand are kept in progress and output failures are retried
// in process, that is the only way deliveries climb; and the record itself may be the reason (a
// fatal error while validating it: a runtime throw, a stack overflow, memory exhausted, none of
// which recover() catches). Such a message is validated alone, and the attempt is recorded in the
// logbook_validator_attempts bucket before validation starts and cleared as soon as it ends. A
// marker that survives means the process died validating that one record; after CrashLimit such
// deaths the record is dead-lettered as "validator crashed on it". Dying anywhere else (while a
// publish is retried, say) clears nothing and blames nobody.

// markerError marks a failure to read or write an isolation marker (an output-side failure).
type markerError struct{ error }

func (e markerError) Unwrap() error { return e.error }

func (w *Worker) attemptKey(it *item) string {
	return fmt.Sprintf("raw.%d.%d", w.rawEpoch, it.meta.Sequence.Stream)
}

// decideAlone decides it under an isolation marker, or dead-letters it when the process already
// died CrashLimit times validating it alone.
func (w *Worker) decideAlone(ctx context.Context, it *item) decision {
	key := w.attemptKey(it)
	if it.marked { // an earlier round could not clear its marker
		if err := w.attempts.Delete(ctx, key); err != nil {
			return decision{wait: markerError{fmt.Errorf("failed to clear attempt marker %s: %w", key, err)}}
		}
		it.marked = false
	}
	deaths, err := w.beginAttempt(ctx, key)
	if err != nil {
		return decision{wait: markerError{err}}
	}
	if deaths >= w.cfg.CrashLimit {
		org, id, _ := identity(it.msg, nil)
		w.log.Error("the process died validating this record alone; dead-lettering it", "org_id", org, "msg_id", id,
			"deaths", deaths, "stream_seq", it.meta.Sequence.Stream)
		it.crashed = true
		return decision{out: rejected(it.msg, org, id, event.RejectValidatorCrashed,
			fmt.Sprintf("validator crashed on it: the process died %d times validating this record alone", deaths))}
	}
	it.marked = true
	d := w.decide(ctx, it.msg)
	if err := w.attempts.Delete(ctx, key); err != nil {
		return decision{wait: markerError{fmt.Errorf("failed to clear attempt marker %s: %w", key, err)}}
	}
	it.marked = false
	return d
}

// beginAttempt returns how many isolated attempts at key died before, and records one more
// (compare-and-set, so concurrent holders of a redelivered message count right).
func (w *Worker) beginAttempt(ctx context.Context, key string) (deaths int, err error) {
	for range 10 {
		e, err := w.attempts.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = w.attempts.Create(ctx, key, []byte("1"))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("failed to mark attempt %s: %w", key, err)
			}
			return 0, nil
		case err != nil:
			return 0, fmt.Errorf("failed to read attempt marker %s: %w", key, err)
		}
		deaths, _ = strconv.Atoi(string(e.Value()))
		if deaths >= w.cfg.CrashLimit {
			return deaths, nil
		}
		_, err = w.attempts.Update(ctx, key, []byte(strconv.Itoa(deaths+1)), e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("failed to mark attempt %s: %w", key, err)
		}
		return deaths, nil
	}
	return 0, fmt.Errorf("failed to mark attempt %s: too much contention", key)
}

// forgetAttempts removes the marker of a record dead-lettered for crashing the validator.
func (w *Worker) forgetAttempts(it *item) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	if err := w.attempts.Delete(ctx, w.attemptKey(it)); err != nil {
		w.log.Warn("failed to delete attempt marker (it expires)", "stream_seq", it.meta.Sequence.Stream, "err", err)
	}
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// A delivery count is not always there to tell: the single process runs JetStream inside itself,
// and a consumer's delivery records reach disk about every 100 ms, so a record that kills the
// process within that time comes back with a delivery count of 1, every time. So before a loop
// validates a batch it writes the batch's sequences under its own key in the same bucket
// (inflight.<raw stream creation>.<instance>.<loop>, overwritten by the next batch, deleted on a
// clean stop); a new worker reads the keys earlier instances left and treats their unsettled
// sequences as suspects, validated alone like redeliveries. Cost: one key-value write per batch.

func (w *Worker) inflightKey(loop int) string {
	return fmt.Sprintf("inflight.%d.%s.%d", w.rawEpoch, w.instance, loop)
}

// markBatch records the sequences loop is about to validate.
func (w *Worker) markBatch(ctx context.Context, loop int, items []*item) error {
	seqs := make([]string, len(items))
	for i, it := range items {
		seqs[i] = strconv.FormatUint(it.meta.Sequence.Stream, 10)
	}
	if _, err := w.attempts.Put(ctx, w.inflightKey(loop), []byte(strings.Join(seqs, ","))); err != nil {
		return fmt.Errorf("failed to mark the batch in flight: %w", err)
	}
	return nil
}

// unmarkBatches deletes this worker's in-flight keys (a clean stop).
func (w *Worker) unmarkBatches() {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	for loop := range w.cons {
		_ = w.attempts.Delete(ctx, w.inflightKey(loop))
	}
}

// loadSuspects reads the in-flight keys earlier instances left: their sequences past the
// consumer's ack floor become suspects; keys wholly settled are deleted.
func (w *Worker) loadSuspects(ctx context.Context) error {
	w.suspects = map[uint64]struct{}{}
	info, err := w.cons[0].Info(ctx)
	if err != nil {
		return fmt.Errorf("failed to read consumer %s: %w", event.ConsumerValidator, err)
	}
	floor := info.AckFloor.Stream
	lister, err := w.attempts.ListKeysFiltered(ctx, fmt.Sprintf("inflight.%d.>", w.rawEpoch))
	if err != nil {
		return fmt.Errorf("failed to list %s: %w", event.BucketValidatorAttempts, err)
	}
	for key := range lister.Keys() {
		e, err := w.attempts.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", key, err)
		}
		open := 0
		for _, s := range strings.Split(string(e.Value()), ",") {
			if seq, err := strconv.ParseUint(s, 10, 64); err == nil && seq > floor {
				w.suspects[seq] = struct{}{}
				open++
			}
		}
		if open == 0 {
			_ = w.attempts.Delete(ctx, key)
		}
	}
	if len(w.suspects) > 0 {
		w.log.Warn("an earlier validator stopped while validating; its messages are validated alone",
			"messages", len(w.suspects))
	}
	return nil
}

// suspect reports whether it must be validated alone: delivered again, or in flight in a
// validator that stopped without a clean exit.
func (w *Worker) suspect(it *item) bool {
	if it.meta.NumDelivered >= uint64(w.cfg.IsolateAfter) {
		return true
	}
	w.suspectsMu.Lock()
	defer w.suspectsMu.Unlock()
	_, ok := w.suspects[it.meta.Sequence.Stream]
	return ok
}

// cleared forgets a settled suspect.
func (w *Worker) cleared(it *item) {
	w.suspectsMu.Lock()
	defer w.suspectsMu.Unlock()
	delete(w.suspects, it.meta.Sequence.Stream)
}
