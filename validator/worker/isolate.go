package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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
