package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// GroupConfig tunes a GroupCommit.
type GroupConfig struct {
	// MaxMsgs caps one atomic batch. Default 1000 (the server's limit).
	MaxMsgs int
	// MaxBytes caps one atomic batch's payload bytes. Default 8 MiB.
	MaxBytes int
	// MaxInFlight is how many batches may await their acknowledgement at once; while all are in
	// flight, the next batch keeps growing. Default 2.
	MaxInFlight int
	// Timeout bounds the wait for one batch's acknowledgement. Default 10 s.
	Timeout time.Duration
}

// DefaultGroupConfig returns the defaults documented on GroupConfig.
func DefaultGroupConfig() GroupConfig {
	return GroupConfig{MaxMsgs: 1000, MaxBytes: 8 << 20, MaxInFlight: 2, Timeout: 10 * time.Second}
}

// GroupCommit publishes messages to one stream in JetStream atomic batches, so that messages
// published concurrently share one disk sync (group commit). With sync always, a batch of 1000
// costs about what one message does. Each caller returns once its own message is stored (or not).
//
// A batch holding a message JetStream refuses (an id the stream has already seen, a failed
// expected-last-sequence condition such as a key-value Create on an existing key) is refused whole;
// such a batch is published again message by message, where a duplicate is acknowledged as one and
// only the offending message fails. Works on any stream with AllowAtomicPublish, including a
// key-value bucket's (subjects $KV.<bucket>.<key>). Safe for concurrent use.
type GroupCommit struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	cfg    GroupConfig
	queue  chan *pending
	slots  chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

type pending struct {
	msg  *nats.Msg
	size int
	done chan error
}

// NewGroupCommit starts a group committer for stream. Every message given to it must go to a
// subject of that stream. Close stops it.
func NewGroupCommit(nc *nats.Conn, js jetstream.JetStream, stream string, cfg GroupConfig) *GroupCommit {
	g := &GroupCommit{
		nc: nc, js: js, stream: stream, cfg: cfg,
		queue: make(chan *pending, cfg.MaxMsgs),
		slots: make(chan struct{}, cfg.MaxInFlight),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go g.run()
	return g
}

// Publish stores msg and returns nil once JetStream acknowledged it (a duplicate message id
// counts as stored). An error means the message may or may not be stored: retry with the same
// message id.
func (g *GroupCommit) Publish(ctx context.Context, msg *nats.Msg) error {
	return g.PublishAll(ctx, []*nats.Msg{msg})[0]
}

// PublishAll stores msgs and returns one result per message, in order.
func (g *GroupCommit) PublishAll(ctx context.Context, msgs []*nats.Msg) []error {
	ps := make([]*pending, len(msgs))
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		ps[i] = &pending{msg: m, size: len(m.Data) + len(m.Subject) + headerSize(m), done: make(chan error, 1)}
		select {
		case g.queue <- ps[i]:
		case <-ctx.Done():
			errs[i], ps[i] = ctx.Err(), nil
		case <-g.stop:
			errs[i], ps[i] = errors.New("group commit is closed"), nil
		}
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		select {
		case errs[i] = <-p.done:
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return errs
}

// Close stops accepting messages and waits for the batches in flight.
func (g *GroupCommit) Close() {
	close(g.stop)
	<-g.done
}

func (g *GroupCommit) run() {
	defer close(g.done)
	defer func() { // wait for in-flight batches
		for i := 0; i < cap(g.slots); i++ {
			g.slots <- struct{}{}
		}
	}()
	for {
		var batch []*pending
		select {
		case p := <-g.queue:
			batch = append(batch, p)
		case <-g.stop:
			g.failQueued()
			return
		}
		size := batch[0].size
		full := func() bool { return len(batch) >= g.cfg.MaxMsgs || size >= g.cfg.MaxBytes }
		// Take what is waiting, then keep gathering until a slot is free.
	gather:
		for !full() {
			select {
			case p := <-g.queue:
				batch, size = append(batch, p), size+p.size
			default:
				break gather
			}
		}
	wait:
		for {
			if full() {
				g.slots <- struct{}{}
				break
			}
			select {
			case g.slots <- struct{}{}:
				break wait
			case p := <-g.queue:
				batch, size = append(batch, p), size+p.size
			}
		}
		go func(batch []*pending) {
			defer func() { <-g.slots }()
			g.send(batch)
		}(batch)
	}
}

func (g *GroupCommit) failQueued() {
	for {
		select {
		case p := <-g.queue:
			p.done <- errors.New("group commit is closed")
		default:
			return
		}
	}
}

// send commits one batch atomically. Messages sharing a message id are sent once and share its
// result; a batch refused for holding an already-stored id is sent again one by one.
func (g *GroupCommit) send(batch []*pending) {
	first := map[string]int{}
	var unique []*pending
	twins := map[*pending][]*pending{}
	for _, p := range batch {
		id := p.msg.Header.Get(jetstream.MsgIDHeader)
		if i, seen := first[id]; seen && id != "" {
			twins[unique[i]] = append(twins[unique[i]], p)
			continue
		}
		first[id] = len(unique)
		unique = append(unique, p)
	}
	finish := func(p *pending, err error) {
		p.done <- err
		for _, t := range twins[p] {
			t.done <- err
		}
	}
	if len(unique) == 1 {
		finish(unique[0], g.publishOne(unique[0].msg))
		return
	}
	err := g.commit(unique)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// JetStream refuses a batch whole when one message breaks a condition (an id already
		// stored, an expected last sequence that does not hold, a full stream): publish each
		// message on its own so every caller gets its own answer.
		g.sendEach(unique, finish)
		return
	}
	for _, p := range unique {
		finish(p, err)
	}
}

func (g *GroupCommit) publishOne(msg *nats.Msg) error {
	clearBatchHeaders(msg)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
	defer cancel()
	_, err := g.js.PublishMsg(ctx, msg)
	return err
}

func (g *GroupCommit) sendEach(ps []*pending, finish func(*pending, error)) {
	futures := make([]jetstream.PubAckFuture, len(ps))
	for i, p := range ps {
		clearBatchHeaders(p.msg)
		f, err := g.js.PublishMsgAsync(p.msg)
		if err != nil {
			finish(p, err)
			continue
		}
		futures[i] = f
	}
	timeout := time.NewTimer(g.cfg.Timeout)
	defer timeout.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			finish(ps[i], nil)
		case err := <-f.Err():
			finish(ps[i], err)
		case <-timeout.C:
			finish(ps[i], fmt.Errorf("publish to %s not acknowledged within %s", g.stream, g.cfg.Timeout))
		}
	}
}

type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Count  int                 `json:"count"`
}

// commit publishes ps as one atomic batch and waits for the server's single answer.
func (g *GroupCommit) commit(ps []*pending) error {
	id := nuid.Next()
	for i, p := range ps {
		p.msg.Header.Set("Nats-Batch-Id", id)
		p.msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(ps)-1 {
			if err := g.nc.PublishMsg(p.msg); err != nil {
				return fmt.Errorf("failed to publish batch to %s: %w", g.stream, err)
			}
			continue
		}
		p.msg.Header.Set("Nats-Batch-Commit", "1")
		resp, err := g.nc.RequestMsg(p.msg, g.cfg.Timeout)
		if err != nil {
			return fmt.Errorf("failed to commit batch to %s: %w", g.stream, err)
		}
		var ack batchAck
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return fmt.Errorf("failed to read batch ack from %s: %w", g.stream, err)
		}
		if ack.Error != nil {
			return ack.Error
		}
		if ack.Stream != g.stream || ack.Count != len(ps) {
			return fmt.Errorf("batch ack from %q for %d messages, want %s and %d", ack.Stream, ack.Count, g.stream, len(ps))
		}
	}
	return nil
}

func clearBatchHeaders(m *nats.Msg) {
	m.Header.Del("Nats-Batch-Id")
	m.Header.Del("Nats-Batch-Sequence")
	m.Header.Del("Nats-Batch-Commit")
}

func headerSize(m *nats.Msg) int {
	n := 0
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
