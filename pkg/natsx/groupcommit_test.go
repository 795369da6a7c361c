package natsx_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func rawMsg(org, id string, size int) *nats.Msg {
	m := nats.NewMsg(event.RawSubject(org))
	m.Data = make([]byte, size)
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	return m
}

func groupCommit(t *testing.T, l natsx.StreamLimits) (*natsx.GroupCommit, jetstream.JetStream) {
	ns, js := natstest.NewWithLimits(t, l)
	nc, _, err := natsx.ConnectInProcess(ns, "gc")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	t.Cleanup(g.Close)
	return g, js
}

// storedIDs reads every message of the raw stream: its message id and its batch id.
func storedIDs(t *testing.T, js jetstream.JetStream) (ids []string, batches map[string]int) {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, event.StreamRaw, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	s, err := js.Stream(ctx, event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	batches = map[string]int{}
	for len(ids) < int(info.State.Msgs) {
		b, err := c.Fetch(int(info.State.Msgs) - len(ids))
		require.NoError(t, err)
		for m := range b.Messages() {
			ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
			batches[m.Headers().Get("Nats-Batch-Id")]++
		}
	}
	return ids, batches
}

func TestGroupCommitBatchesConcurrentPublishes(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	const workers, each = 50, 40
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				assert.NoError(t, g.Publish(context.Background(), rawMsg("org_a", fmt.Sprintf("w%d-%d", w, i), 200)))
			}
		}(w)
	}
	wg.Wait()
	ids, batches := storedIDs(t, js)
	require.Len(t, ids, workers*each, "every acknowledged message is stored once")
	seen := map[string]bool{}
	for _, id := range ids {
		require.False(t, seen[id], "stored twice: %s", id)
		seen[id] = true
	}
	t.Logf("%d messages in %d batches", len(ids), len(batches))
	assert.Less(t, len(batches), workers*each/2, "concurrent publishes must share batches (group commit)")
}

func TestGroupCommitDuplicateIDsAreAcknowledgedOnce(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, rawMsg("org_a", "already-there", 10)))
	// One batch mixing an id the stream has seen, an id repeated inside the batch, and new ids.
	msgs := []*nats.Msg{
		rawMsg("org_a", "new-1", 10), rawMsg("org_b", "already-there", 10), rawMsg("org_a", "twin", 10),
		rawMsg("org_a", "twin", 10), rawMsg("org_b", "new-2", 10),
	}
	for i, err := range g.PublishAll(ctx, msgs) {
		assert.NoError(t, err, "message %d", i)
	}
	ids, _ := storedIDs(t, js)
	assert.ElementsMatch(t, []string{"already-there", "new-1", "twin", "new-2"}, ids)
}

func TestGroupCommitReportsAFullStream(t *testing.T) {
	l := natsx.DefaultStreamLimits()
	l.MaxBytes = 1 << 20
	g, js := groupCommit(t, l)
	ctx := context.Background()
	var failed int
	for i := 0; i < 30; i++ {
		msgs := []*nats.Msg{rawMsg("org_a", fmt.Sprintf("a%d", i), 40<<10), rawMsg("org_a", fmt.Sprintf("b%d", i), 40<<10)}
		for _, err := range g.PublishAll(ctx, msgs) {
			if err != nil {
				failed++
			}
		}
	}
	require.Positive(t, failed, "a full stream must refuse, not drop")
	ids, _ := storedIDs(t, js)
	assert.Equal(t, 60-failed, len(ids), "exactly the acknowledged messages are stored")
}

// A batch smaller than MinAtomic is published message by message (no atomic batch staged), with
// the same outcome per caller: a repeated id is acknowledged as stored, once; a batch of MinAtomic
// or more goes atomically.
func TestGroupCommitSendsSmallBatchesMessageByMessage(t *testing.T) {
	ns, js := natstest.New(t)
	nc, _, err := natsx.ConnectInProcess(ns, "gc")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := natsx.DefaultGroupConfig()
	cfg.MinAtomic = 5
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, cfg)
	t.Cleanup(g.Close)
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, rawMsg("org_a", "already-there", 10)))
	small := []*nats.Msg{rawMsg("org_a", "s1", 10), rawMsg("org_b", "already-there", 10), rawMsg("org_a", "s2", 10),
		rawMsg("org_a", "s2", 10)}
	for i, err := range g.PublishAll(ctx, small) {
		assert.NoError(t, err, "message %d", i)
	}
	ids, batches := storedIDs(t, js)
	assert.ElementsMatch(t, []string{"already-there", "s1", "s2"}, ids)
	assert.Equal(t, map[string]int{"": 3}, batches, "no atomic batch for fewer than MinAtomic messages")
	var large []*nats.Msg
	for i := range 1000 {
		large = append(large, rawMsg("org_a", fmt.Sprintf("l%d", i), 10))
	}
	for i, err := range g.PublishAll(ctx, large) {
		assert.NoError(t, err, "message %d", i)
	}
	ids, batches = storedIDs(t, js)
	assert.Len(t, ids, 1003)
	assert.Len(t, batches, 2, "one PublishAll of 1000 goes as one atomic batch, not split by the committer: %v", batches)
}

// A key-value bucket's stream takes group-committed writes: a put, a create (expected last
// subject sequence 0) that holds, and one that fails without failing its batch-mates.
func TestGroupCommitOnAKeyValueBucket(t *testing.T) {
	_, js := natstest.New(t)
	ctx := context.Background()
	const bucket = "test_group_commit"
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	s, err := js.Stream(ctx, natsx.KVStream(bucket))
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.AllowAtomicPublish = true // a bucket's stream is created without it
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "taken", []byte("first"))
	require.NoError(t, err)
	g := natsx.NewGroupCommit(js.Conn(), js, natsx.KVStream(bucket), natsx.DefaultGroupConfig())
	t.Cleanup(g.Close)
	msg := func(key, val string, create bool) *nats.Msg {
		m := nats.NewMsg(natsx.KVSubject(bucket, key))
		m.Data = []byte(val)
		if create {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		}
		return m
	}
	errs := g.PublishAll(ctx, []*nats.Msg{msg("a", "1", false), msg("b", "2", true), msg("taken", "second", true), msg("c", "3", true)})
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.Error(t, errs[2], "a create on an existing key fails")
	assert.NoError(t, errs[3])
	for key, want := range map[string]string{"a": "1", "b": "2", "taken": "first", "c": "3"} {
		e, err := kv.Get(ctx, key)
		require.NoError(t, err, key)
		assert.Equal(t, want, string(e.Value()), key)
	}
	// Many concurrent puts share batches.
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			assert.NoError(t, g.Publish(ctx, msg(fmt.Sprintf("k%d", i), "v", true)))
		}(i)
	}
	wg.Wait()
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	n := 0
	for range keys.Keys() {
		n++
	}
	assert.Equal(t, 204, n)
}

// Callers whose contexts end at random moments (before their message is queued, while it is
// queued, while it is being sent): a caller told "failed" never finds its message stored later,
// and every success is stored exactly once.
func TestGroupCommitNeverPublishesWhatItFailed(t *testing.T) {
	g, js := groupCommit(t, natsx.DefaultStreamLimits())
	const workers, each = 64, 40
	var mu sync.Mutex
	failed, stored := map[string]bool{}, map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for i := 0; i < each; {
				n := 1 + rng.IntN(3) // Publish and PublishAll alike
				var msgs []*nats.Msg
				var ids []string
				for k := 0; k < n; k++ {
					id := fmt.Sprintf("w%d-%d", w, i+k)
					ids, msgs = append(ids, id), append(msgs, rawMsg("org_a", id, 100))
				}
				i += n
				wait := time.Duration(rng.IntN(4000)) * time.Microsecond // most end before their batch is stored
				if rng.IntN(4) == 0 {
					wait = 10 * time.Second // some do not
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				errs := g.PublishAll(ctx, msgs)
				cancel()
				mu.Lock()
				for k, err := range errs {
					if err != nil {
						failed[ids[k]] = true
					} else {
						stored[ids[k]] = true
					}
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	// Whatever is still queued goes out before this sentinel; Close waits for batches in flight.
	require.NoError(t, g.Publish(context.Background(), rawMsg("org_a", "sentinel", 10)))
	g.Close()
	ids, _ := storedIDs(t, js)
	count := map[string]int{}
	for _, id := range ids {
		count[id]++
	}
	var late []string
	for id := range failed {
		if count[id] > 0 {
			late = append(late, id)
		}
	}
	for id := range stored {
		assert.Equal(t, 1, count[id], "acknowledged %s stored %d times", id, count[id])
	}
	t.Logf("%d acknowledged, %d failed, %d failed yet stored", len(stored), len(failed), len(late))
	assert.Empty(t, late[:min(len(late), 5)], "%d messages stored after their callers were told they failed", len(late))
	require.Positive(t, len(failed), "no context ended before its message was stored: the test tested nothing")
	require.Positive(t, len(stored))
}

// tcpServer starts an embedded server listening on loopback with Logbook's streams prepared and
// returns its client URL.
func tcpServer(t *testing.T) string {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, js, err := natsx.Connect(ns.ClientURL(), "prepare")
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, natsx.Prepare(context.Background(), js, natsx.DefaultStreamLimits()))
	return ns.ClientURL()
}

// When JetStream stops answering right after refusing a batch (so its messages are re-sent one by
// one), every caller still gets an error within the publish deadline: no publish waits forever,
// and no in-flight slot is held.
func TestGroupCommitPublishesFailWithinTheirDeadline(t *testing.T) {
	p := newProxy(t, tcpServer(t)[len("nats://"):])
	nc, js, err := natsx.Connect(p.URL(), "gc")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := natsx.DefaultGroupConfig()
	cfg.Timeout = 500 * time.Millisecond
	cfg.MinAtomic = 2 // the four messages below go as one atomic batch, refused whole
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, cfg)
	t.Cleanup(g.Close)
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, rawMsg("org_a", "stored", 10)))

	p.SilenceAfter(`"error":{`) // the batch's refusal gets through, then nothing does
	done := make(chan []error, 1)
	go func() {
		done <- g.PublishAll(ctx, []*nats.Msg{rawMsg("org_a", "stored", 10), rawMsg("org_a", "a", 10),
			rawMsg("org_a", "b", 10), rawMsg("org_a", "c", 10)})
	}()
	select {
	case errs := <-done:
		for i, err := range errs {
			assert.Error(t, err, "message %d: nothing answered it", i)
		}
	case <-time.After(20 * cfg.Timeout):
		t.Fatalf("publishes still waiting %s after JetStream went silent (deadline %s)", 20*cfg.Timeout, cfg.Timeout)
	}
	p.Answer()
	for i := 0; i < 2*cfg.MaxInFlight; i++ { // every slot is free again
		require.NoError(t, g.Publish(ctx, rawMsg("org_a", fmt.Sprintf("after-%d", i), 10)))
	}
}

// A committer that gets no answers while messages wait reports it through Check (readiness), and
// recovers by itself once JetStream answers again: new publishes succeed on the same committer.
func TestGroupCommitStallFailsCheckAndRecovers(t *testing.T) {
	p := newProxy(t, tcpServer(t)[len("nats://"):])
	nc, js, err := natsx.Connect(p.URL(), "gc")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	cfg := natsx.DefaultGroupConfig()
	cfg.Timeout, cfg.StallAfter = 300*time.Millisecond, time.Second
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, cfg)
	t.Cleanup(g.Close)
	ctx := context.Background()
	require.NoError(t, g.Publish(ctx, rawMsg("org_a", "first", 10)))
	require.NoError(t, g.Check(ctx))

	p.Silence()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for w := 0; w < 4; w++ { // producers keep messages waiting
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				start := time.Now()
				err := g.Publish(pctx, rawMsg("org_a", fmt.Sprintf("silent-%d-%d", w, i), 10))
				cancel()
				if err == nil {
					t.Errorf("a publish succeeded while nothing answered")
				}
				d := time.Since(start)
				for old := slowest.Load(); int64(d) > old && !slowest.CompareAndSwap(old, int64(d)); old = slowest.Load() {
				}
			}
		}(w)
	}
	require.Eventually(t, func() bool { return g.Check(ctx) != nil }, 10*time.Second, 50*time.Millisecond,
		"readiness never noticed that JetStream stopped answering")
	t.Logf("check while silent: %v", g.Check(ctx))
	close(stop)
	wg.Wait()
	assert.Less(t, time.Duration(slowest.Load()), 10*cfg.Timeout, "a caller waited past the publish deadline")

	p.Answer()
	// Readiness passes again without traffic (a balancer sends none to an unready process): a
	// probe the stream refuses, storing nothing, shows JetStream answers.
	_, before, _ := rawCount(t, js)
	require.Eventually(t, func() bool { return g.Check(ctx) == nil }, 10*time.Second, 100*time.Millisecond,
		"readiness never passed again")
	_, after, _ := rawCount(t, js)
	assert.Equal(t, before, after, "probes store nothing")
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 2*cfg.Timeout)
		defer cancel()
		return g.Publish(pctx, rawMsg("org_a", "after-"+time.Now().String(), 10)) == nil
	}, 10*time.Second, 100*time.Millisecond, "the committer never recovered")
	for i := 0; i < 2*cfg.MaxInFlight; i++ {
		require.NoError(t, g.Publish(ctx, rawMsg("org_a", fmt.Sprintf("recovered-%d", i), 10)))
	}
	require.NoError(t, g.Check(ctx), "readiness passes again")
}

func rawCount(t *testing.T, js jetstream.JetStream) (first, last, msgs uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), event.StreamRaw)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.FirstSeq, info.State.LastSeq, info.State.Msgs
}

// BenchmarkGroupCommit publishes b.N 200-byte messages from 64 concurrent callers through one
// committer on an embedded server (file storage, sync always).
func BenchmarkGroupCommit(b *testing.B) {
	_, js := natstest.New(b)
	g := natsx.NewGroupCommit(js.Conn(), js, event.StreamRaw, natsx.DefaultGroupConfig())
	defer g.Close()
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(64 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := g.Publish(ctx, rawMsg("org_a", fmt.Sprintf("b-%d", n.Add(1)), 200)); err != nil {
				b.Error(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
