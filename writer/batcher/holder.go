package batcher

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// holder keeps the messages a writer has fetched and not yet settled in progress: every interval
// it tells JetStream they are still being worked on, so they are not redelivered to another writer
// while they wait in a batch, are recorded, inserted, retried or re-driven, however long that
// takes. A message is added when it is fetched and released when it is acked, terminated, or left
// for redelivery (shutdown).
type holder struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
	done chan struct{}
	over chan struct{}
	once sync.Once
}

func newHolder(interval time.Duration) *holder {
	h := &holder{msgs: map[jetstream.Msg]struct{}{}, done: make(chan struct{}), over: make(chan struct{})}
	go h.run(interval)
	return h
}

func (h *holder) run(interval time.Duration) {
	defer close(h.over)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
			h.mu.Lock()
			msgs := make([]jetstream.Msg, 0, len(h.msgs))
			for m := range h.msgs {
				msgs = append(msgs, m)
			}
			h.mu.Unlock()
			for _, m := range msgs {
				_ = m.InProgress()
			}
		}
	}
}

func (h *holder) add(msgs ...jetstream.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		h.msgs[m] = struct{}{}
	}
}

func (h *holder) release(msgs ...jetstream.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		delete(h.msgs, m)
	}
}

// held is how many messages are held.
func (h *holder) held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs)
}

// stop ends the in-progress notices; messages still held are left for redelivery.
func (h *holder) stop() {
	h.once.Do(func() { close(h.done) })
	<-h.over
}
