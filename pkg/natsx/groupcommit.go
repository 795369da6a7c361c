package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
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
	// MinAtomic is the smallest batch sent as one atomic batch; a smaller one is sent message by
	// message, pipelined, each message stored and synced on its own. nats-server stages an atomic
	// batch of an R1 file stream in a temporary file store (directories created, synced and
	// removed: about 4 syncs and 7 ms here, whatever the batch's size), while a lone message costs
	// one append and one sync (about 0.3 ms). Default 8; 2 sends every batch of two or more
	// atomically.
	MinAtomic int
	// Timeout is the deadline of every publish: a batch's acknowledgement, and each message's when
	// a refused batch is re-sent one by one. A caller whose message is being sent waits at most
	// about twice this long. Default 10 s.
	Timeout time.Duration
	// StallAfter is how long messages may wait without JetStream answering any publish before
	// Check reports the committer stalled. Default twice Timeout.
	StallAfter time.Duration
}

// DefaultGroupConfig returns the defaults documented on GroupConfig.
func DefaultGroupConfig() GroupConfig {
	return GroupConfig{MaxMsgs: 1000, MaxBytes: 8 << 20, MaxInFlight: 2, MinAtomic: 8, Timeout: 10 * time.Second,
		StallAfter: 20 * time.Second}
}

// Errors a GroupCommit returns, to tell "certainly not stored" from "perhaps stored".
var (
	// ErrNotSent wraps the error of a message that was never sent: its caller's context ended while
	// it was queued (it is dropped from the queue), or the committer was closed. It is not stored.
	ErrNotSent = errors.New("not sent")
	// ErrUnconfirmed wraps the error of a message that was sent but not acknowledged within the
	// deadline: it may or may not be stored. Retry with the same message id.
	ErrUnconfirmed = errors.New("sent but not acknowledged")
)

// GroupCommit publishes messages to one stream in JetStream atomic batches, so that messages
// published concurrently share one disk sync (group commit). With sync always, a batch of 1000
// costs about what one message does. Each caller returns once its own message is stored (or not).
//
// A batch holding a message JetStream refuses (an id the stream has already seen, a failed
// expected-last-sequence condition such as a key-value Create on an existing key) is refused whole;
// such a batch is published again message by message, where a duplicate is acknowledged as one and
// only the offending message fails. Works on any stream with AllowAtomicPublish, including a
// key-value bucket's (subjects $KV.<bucket>.<key>). Safe for concurrent use.
//
// A message is never published after its caller was told it failed: a caller whose context ends
// while its message is queued takes it back (ErrNotSent); once the message is being sent, the
// caller waits for the outcome, bounded by the publish deadline (GroupConfig.Timeout), whatever its
// context says. Check reports a committer that gets no answers from JetStream.
type GroupCommit struct {
	nc     *nats.Conn
	js     jetstream.JetStream // single publishes
	async  jetstream.JetStream // one-by-one re-sends: every future has its own ack deadline
	stream string
	cfg    GroupConfig
	queue  chan group
	slots  chan struct{}
	stop   chan struct{}
	done   chan struct{}

	closing   sync.RWMutex // held for reading while enqueuing; Close takes it to stop intake
	closed    bool
	closeOnce sync.Once

	// Progress, for Check: messages accepted and not yet settled, when that count last left 0,
	// when JetStream last answered a publish (stored it or refused it), and when a publish last
	// failed without an answer (a deadline, no responders), in Unix nanoseconds.
	waiting     atomic.Int64
	busySince   atomic.Int64
	lastAnswer  atomic.Int64
	lastFailure atomic.Int64
	lastSubject atomic.Value // string: a subject of the stream, for probes
}

// errCodeStreamNotMatch is JetStream's answer to a publish expecting another stream: the probe's
// answer, proving the stream's leader takes publishes, with nothing stored.
const errCodeStreamNotMatch = 10060

// outcome is how a message stopped waiting.
type outcome int

const (
	answered outcome = iota // JetStream stored or refused it
	failed                  // sent, and no answer came (a deadline, no responders, a lost connection)
	dropped                 // never sent: its caller took it back, or the committer closed
)

// A pending message moves from queued to abandoned (by its caller, whose context ended first) or
// to sending (by the committer); whichever compare-and-swap wins decides whether it is published.
const (
	queued int32 = iota
	abandoned
	sending
)

type pending struct {
	msg   *nats.Msg
	size  int
	state atomic.Int32
	done  chan error // the outcome, sent once by the committer after it took the message
}

// group is the messages of one PublishAll call (or a part of at most MaxMsgs and MaxBytes), queued
// together so that no batch splits them.
type group struct {
	ps   []*pending
	size int
}

// NewGroupCommit starts a group committer for stream. Every message given to it must go to a
// subject of that stream. js serves single publishes; one-by-one re-sends go through a JetStream
// context of nc's own with an acknowledgement deadline per message. Close stops it.
func NewGroupCommit(nc *nats.Conn, js jetstream.JetStream, stream string, cfg GroupConfig) *GroupCommit {
	d := DefaultGroupConfig()
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = 2 * cfg.Timeout
	}
	if cfg.MinAtomic <= 0 {
		cfg.MinAtomic = d.MinAtomic
	}
	cfg.MaxMsgs, cfg.MaxBytes, cfg.MaxInFlight = max(cfg.MaxMsgs, 1), max(cfg.MaxBytes, 1), max(cfg.MaxInFlight, 1)
	async, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.Timeout))
	if err != nil { // only invalid options fail, and these are valid
		panic(fmt.Sprintf("natsx: jetstream context: %v", err))
	}
	g := &GroupCommit{
		nc: nc, js: js, async: async, stream: stream, cfg: cfg,
		queue: make(chan group, cfg.MaxMsgs),
		slots: make(chan struct{}, cfg.MaxInFlight),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go g.run()
	return g
}

// Publish stores msg and returns nil once JetStream acknowledged it (a duplicate message id
// counts as stored). An error wrapping ErrNotSent means the message is not stored; any other error
// means it may or may not be stored: retry with the same message id.
func (g *GroupCommit) Publish(ctx context.Context, msg *nats.Msg) error {
	return g.PublishAll(ctx, []*nats.Msg{msg})[0]
}

// PublishAll stores msgs and returns one result per message, in order, with Publish's meaning.
// The messages of one call stay together: they are queued as groups of at most MaxMsgs messages
// and MaxBytes, and a batch takes whole groups, so a call that fits one batch is one batch.
func (g *GroupCommit) PublishAll(ctx context.Context, msgs []*nats.Msg) []error {
	ps := make([]*pending, len(msgs))
	errs := make([]error, len(msgs))
	g.closing.RLock()
	for start := 0; start < len(msgs); {
		if g.closed {
			for i := start; i < len(msgs); i++ {
				errs[i] = g.closedErr()
			}
			break
		}
		grp := group{}
		end := start
		for end < len(msgs) && len(grp.ps) < g.cfg.MaxMsgs && (len(grp.ps) == 0 || grp.size < g.cfg.MaxBytes) {
			m := msgs[end]
			p := &pending{msg: m, size: len(m.Data) + len(m.Subject) + headerSize(m), done: make(chan error, 1)}
			if len(grp.ps) > 0 && grp.size+p.size > g.cfg.MaxBytes {
				break
			}
			grp.ps, grp.size = append(grp.ps, p), grp.size+p.size
			end++
		}
		g.lastSubject.Store(msgs[start].Subject)
		for range grp.ps {
			g.accepted()
		}
		select {
		case g.queue <- grp:
			copy(ps[start:end], grp.ps)
		case <-ctx.Done():
			for i := start; i < end; i++ {
				g.settled(dropped)
				errs[i] = fmt.Errorf("publish to %s %w: %w", g.stream, ErrNotSent, ctx.Err())
			}
		}
		start = end
	}
	g.closing.RUnlock()
	for i, p := range ps {
		if p == nil {
			continue
		}
		select {
		case errs[i] = <-p.done:
		case <-ctx.Done():
			if p.state.CompareAndSwap(queued, abandoned) {
				g.settled(dropped) // the committer will skip it
				errs[i] = fmt.Errorf("publish to %s %w: %w", g.stream, ErrNotSent, ctx.Err())
				continue
			}
			errs[i] = <-p.done // being sent: its outcome comes within the publish deadline
		}
	}
	return errs
}

// Check reports a stalled committer, for readiness (it has obs.Check's shape): messages have been
// waiting longer than StallAfter and JetStream answered none of its publishes meanwhile (a
// JetStream that stopped answering), or publishes failed without an answer since the last one
// JetStream answered and a probe gets no answer either (a stream without a leader, where
// publishes fail fast; the probe is refused by the stream's leader, never stored). It passes again
// as soon as JetStream answers, with or without traffic; the committer recovers by itself, since
// every publish has its own deadline.
func (g *GroupCommit) Check(ctx context.Context) error {
	if n := g.waiting.Load(); n > 0 {
		since := time.Unix(0, max(g.busySince.Load(), g.lastAnswer.Load()))
		if d := time.Since(since); d > g.cfg.StallAfter {
			return fmt.Errorf("publishing to %s is stalled: %d messages waiting, no answer from JetStream for %s",
				g.stream, n, d.Round(100*time.Millisecond))
		}
	}
	if g.lastFailure.Load() > g.lastAnswer.Load() {
		if err := g.probe(ctx); err != nil {
			return fmt.Errorf("publishing to %s fails without an answer from JetStream, and a probe got none: %w", g.stream, err)
		}
		g.answered()
	}
	return nil
}

// probe publishes an empty message expecting another stream, which the stream's leader refuses
// without storing anything: an answer shows the stream takes publishes again.
func (g *GroupCommit) probe(ctx context.Context) error {
	subj, _ := g.lastSubject.Load().(string)
	if subj == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	m := nats.NewMsg(subj)
	m.Header.Set(jetstream.ExpectedStreamHeader, "logbook-probe-expects-no-stream")
	_, err := g.js.PublishMsg(ctx, m, jetstream.WithRetryAttempts(0))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamNotMatch {
		return nil
	}
	if err == nil {
		return errors.New("the probe was stored") // cannot happen: JetStream checks the expected stream first
	}
	return err
}

func (g *GroupCommit) accepted() {
	if g.waiting.Add(1) == 1 {
		g.busySince.Store(time.Now().UnixNano())
	}
}

// settled records that a message no longer waits, and how it ended.
func (g *GroupCommit) settled(o outcome) {
	switch o {
	case answered:
		g.answered()
	case failed:
		g.lastFailure.Store(time.Now().UnixNano())
	}
	g.waiting.Add(-1)
}

func (g *GroupCommit) answered() { g.lastAnswer.Store(time.Now().UnixNano()) }

// outcomeOf says whether err (nil: stored) came from JetStream itself rather than from a deadline
// or a missing responder.
func outcomeOf(err error) outcome {
	var apiErr *jetstream.APIError
	if err == nil || errors.As(err, &apiErr) {
		return answered
	}
	return failed
}

func (g *GroupCommit) closedErr() error {
	return fmt.Errorf("publish to %s %w: group commit is closed", g.stream, ErrNotSent)
}

// Close stops accepting messages, fails those still queued (ErrNotSent) and waits for the batches
// in flight, each bounded by its deadline.
func (g *GroupCommit) Close() {
	g.closeOnce.Do(func() {
		g.closing.Lock()
		g.closed = true
		g.closing.Unlock()
		close(g.stop)
		<-g.done
	})
}

func (g *GroupCommit) run() {
	defer close(g.done)
	defer func() { // wait for in-flight batches
		for i := 0; i < cap(g.slots); i++ {
			g.slots <- struct{}{}
		}
	}()
	var next *group // a group that did not fit the previous batch: it starts the next one
	for {
		var batch []*pending
		size := 0
		if next != nil {
			batch, size, next = next.ps, next.size, nil
		} else {
			select {
			case grp := <-g.queue:
				batch, size = grp.ps, grp.size
			case <-g.stop:
				g.failQueued()
				return
			}
		}
		// take adds grp to the batch, or keeps it for the next batch when it does not fit.
		take := func(grp group) {
			if len(batch)+len(grp.ps) > g.cfg.MaxMsgs || size+grp.size > g.cfg.MaxBytes {
				next = &grp
				return
			}
			batch, size = append(batch, grp.ps...), size+grp.size
		}
		full := func() bool { return next != nil || len(batch) >= g.cfg.MaxMsgs || size >= g.cfg.MaxBytes }
		// Take what is waiting, then keep gathering until a slot is free.
	gather:
		for !full() {
			select {
			case grp := <-g.queue:
				take(grp)
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
			case grp := <-g.queue:
				take(grp)
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
		case grp := <-g.queue:
			for _, p := range grp.ps {
				if p.state.CompareAndSwap(queued, sending) {
					p.done <- g.closedErr()
					g.settled(dropped)
				}
			}
		default:
			return
		}
	}
}

// send commits one batch atomically. Messages their callers took back are dropped first. Messages
// sharing a message id are sent once and share its result; a batch refused for holding an
// already-stored id is sent again one by one.
func (g *GroupCommit) send(batch []*pending) {
	first := map[string]int{}
	var unique []*pending
	twins := map[*pending][]*pending{}
	for _, p := range batch {
		if !p.state.CompareAndSwap(queued, sending) {
			continue // abandoned by its caller: never published
		}
		id := p.msg.Header.Get(jetstream.MsgIDHeader)
		if i, seen := first[id]; seen && id != "" {
			twins[unique[i]] = append(twins[unique[i]], p)
			continue
		}
		first[id] = len(unique)
		unique = append(unique, p)
	}
	finish := func(p *pending, err error) {
		o := outcomeOf(err)
		for _, q := range append([]*pending{p}, twins[p]...) {
			q.done <- err
			g.settled(o)
		}
	}
	switch len(unique) {
	case 0:
		return
	case 1:
		finish(unique[0], g.publishOne(unique[0].msg))
		return
	}
	if len(unique) < g.cfg.MinAtomic {
		// Cheaper than staging an atomic batch, and the same outcome for every caller.
		g.sendEach(unique, finish)
		return
	}
	err := g.commit(unique)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// JetStream refuses a batch whole when one message breaks a condition (an id already
		// stored, an expected last sequence that does not hold, a full stream): publish each
		// message on its own so every caller gets its own answer.
		g.answered()
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
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("publish to %s %w within %s: %w", g.stream, ErrUnconfirmed, g.cfg.Timeout, err)
	}
	return err
}

// sendEach publishes ps one by one, in order, without waiting in between, and gives each its
// outcome by a common deadline: none waits past it, so the batch's slot is freed on time.
func (g *GroupCommit) sendEach(ps []*pending, finish func(*pending, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, len(ps))
	for i, p := range ps {
		clearBatchHeaders(p.msg)
		f, err := g.async.PublishMsgAsync(p.msg)
		if err != nil {
			finish(p, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			finish(ps[i], nil)
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				err = fmt.Errorf("publish to %s %w within %s: %w", g.stream, ErrUnconfirmed, g.cfg.Timeout, err)
			}
			finish(ps[i], err)
		case <-ctx.Done(): // stays closed: every remaining future gets the same deadline
			finish(ps[i], fmt.Errorf("publish to %s %w within %s", g.stream, ErrUnconfirmed, g.cfg.Timeout))
		}
	}
}

type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Count  int                 `json:"count"`
}

// commit publishes ps as one atomic batch and waits for the server's single answer, at most
// Timeout.
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
		if errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("batch to %s %w within %s: %w", g.stream, ErrUnconfirmed, g.cfg.Timeout, err)
		}
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
