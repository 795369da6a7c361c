package worker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// episode is one settle call's wait on failing outputs: since when, and how many messages.
type episode struct {
	since time.Time
	n     int
}

// backlog is what all loops of a worker hold back while outputs fail. Safe for concurrent use.
type backlog struct {
	mu       sync.Mutex
	episodes map[*episode]struct{}
	lastErr  error
}

// failed remembers the latest output failure, for OutputCheck.
func (b *backlog) failed(err error) {
	if err == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastErr = err
}

// update records that ep now holds n messages (0: none, the episode is over) and reports the
// worker's whole backlog to m.
func (b *backlog) update(m Metrics, ep *episode, n int) {
	b.mu.Lock()
	if b.episodes == nil {
		b.episodes = map[*episode]struct{}{}
	}
	ep.n = n
	if n == 0 {
		delete(b.episodes, ep)
	} else {
		b.episodes[ep] = struct{}{}
	}
	total, oldest := b.snapshotLocked()
	b.mu.Unlock()
	if m != nil {
		m.Waiting(total, oldest)
	}
}

func (b *backlog) snapshot() (int, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snapshotLocked()
}

func (b *backlog) snapshotLocked() (total int, oldest time.Time) {
	for ep := range b.episodes {
		total += ep.n
		if oldest.IsZero() || ep.since.Before(oldest) {
			oldest = ep.since
		}
	}
	return total, oldest
}

// Backlog returns how many raw messages the worker holds back because an output fails, and since
// when the oldest of them waits (zero when none).
func (w *Worker) Backlog() (retrying int, oldest time.Time) { return w.backlog.snapshot() }

// OutputCheck is a readiness check (obs.Health.AddDegraded) that fails while some message has
// waited on failing outputs for longer than Config.DegradedAfter. The process stays alive and
// keeps retrying; the check tells operators that valid events are not flowing.
func (w *Worker) OutputCheck() func(context.Context) error {
	return func(context.Context) error {
		w.backlog.mu.Lock()
		n, oldest := w.backlog.snapshotLocked()
		last := w.backlog.lastErr
		w.backlog.mu.Unlock()
		if n > 0 && time.Since(oldest) > w.cfg.DegradedAfter {
			return fmt.Errorf("%d raw messages wait on failing outputs (valid or rejected stream, schemas) for %s; last error: %w",
				n, time.Since(oldest).Round(time.Second), last)
		}
		return nil
	}
}
