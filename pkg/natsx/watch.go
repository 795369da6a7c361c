package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Mirror keeps something in memory in step with a key-value bucket: apply is called for every
// entry the bucket holds and then for every change (puts and deletes alike), one at a time, in
// order. The schema registry, the API keys, the retention settings and the writer's batch ledger
// are such mirrors.
type Mirror struct {
	stop context.CancelFunc
	done chan struct{}
}

// WatchBucket starts a Mirror on kv and returns once every current entry has been applied (or ctx
// ends first). Stop ends it.
func WatchBucket(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry)) (*Mirror, error) {
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("failed to watch bucket %s: %w", kv.Bucket(), err)
	}
	m := &Mirror{stop: cancel, done: make(chan struct{})}
	loaded := make(chan struct{})
	go func() {
		defer close(m.done)
		defer func() { _ = w.Stop() }()
		initial := true
		for e := range w.Updates() {
			if e == nil { // the end of the initial values
				if initial {
					close(loaded)
					initial = false
				}
				continue
			}
			apply(e)
		}
	}()
	select {
	case <-loaded:
		return m, nil
	case <-ctx.Done():
		m.Stop()
		return nil, fmt.Errorf("failed to load bucket %s: %w", kv.Bucket(), ctx.Err())
	}
}

// Stop ends the mirror and waits until apply is no longer called.
func (m *Mirror) Stop() {
	m.stop()
	<-m.done
}
