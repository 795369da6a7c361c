package natsx_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type clusterNode struct {
	opts *server.Options
	srv  *server.Server
}

func (n *clusterNode) start(t *testing.T) {
	t.Helper()
	s, err := server.NewServer(n.opts)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(30*time.Second))
	n.srv = s
}

func (n *clusterNode) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Acceptance check 12: a three-node JetStream cluster on loopback with R3 streams (sync always).
// Writes acknowledged before and after losing the stream leader survive; while quorum is lost,
// publishes fail and are never acknowledged; after a restart every acknowledged write is there.
// Part of `make chaos` (LOGBOOK_CHAOS=1): elections take seconds.
func TestR3ClusterKeepsAcknowledgedWrites(t *testing.T) {
	if os.Getenv("LOGBOOK_CHAOS") != "1" {
		t.Skip("cluster fault test runs with `make chaos` (LOGBOOK_CHAOS=1)")
	}
	clusterPorts := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range clusterPorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = &clusterNode{opts: &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: freePort(t),
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "logbook", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  routes,
		}}
		nodes[i].start(t)
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	urls := ""
	for i, n := range nodes {
		if i > 0 {
			urls += ","
		}
		urls += fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	}
	nc, js, err := natsx.Connect(urls, "cluster-test")
	require.NoError(t, err)
	defer nc.Close()
	limits := natsx.DefaultStreamLimits()
	limits.Replicas = 3
	require.Eventually(t, func() bool { return natsx.Prepare(context.Background(), js, limits) == nil },
		60*time.Second, 500*time.Millisecond, "the cluster never accepted R3 streams")

	acked := map[string]bool{}
	publish := func(n int, prefix string) (ok, failed int) {
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			m := nats.NewMsg(event.RawSubject("org_r3"))
			m.Data = []byte(id)
			m.Header.Set(jetstream.MsgIDHeader, id)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := js.PublishMsg(ctx, m)
			cancel()
			if err == nil {
				acked[id] = true
				ok++
			} else {
				failed++
			}
		}
		return ok, failed
	}
	ok, _ := publish(200, "before")
	require.Equal(t, 200, ok)

	leaderIndex := func() int {
		s, err := js.Stream(context.Background(), event.StreamRaw)
		if err != nil {
			return -1
		}
		info, err := s.Info(context.Background())
		if err != nil || info.Cluster == nil {
			return -1
		}
		for i, n := range nodes {
			if n.srv != nil && n.opts.ServerName == info.Cluster.Leader {
				return i
			}
		}
		return -1
	}
	leader := leaderIndex()
	require.GreaterOrEqual(t, leader, 0)
	nodes[leader].stop() // the leader dies
	require.Eventually(t, func() bool { i := leaderIndex(); return i >= 0 && i != leader }, 60*time.Second, 250*time.Millisecond)
	ok, _ = publish(200, "after-leader")
	assert.Positive(t, ok, "a new leader accepts writes")

	// A group committer on the same cluster, to see it through the loss of quorum.
	gcfg := natsx.DefaultGroupConfig()
	gcfg.Timeout, gcfg.StallAfter = time.Second, 2*time.Second
	g := natsx.NewGroupCommit(nc, js, event.StreamRaw, gcfg)
	defer g.Close()
	gcPublish := func(id string, wait time.Duration) error {
		m := nats.NewMsg(event.RawSubject("org_r3"))
		m.Data = []byte(id)
		m.Header.Set(jetstream.MsgIDHeader, id)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := g.Publish(ctx, m)
		if err == nil {
			acked[id] = true
		}
		return err
	}
	require.NoError(t, gcPublish("gc-before", 10*time.Second))

	// Lose quorum: one more node down. Publishes must fail, never be acknowledged.
	follower := (leader + 1) % 3
	if leaderIndex() == follower {
		follower = (leader + 2) % 3
	}
	nodes[follower].stop()
	before := len(acked)
	ok, failed := publish(20, "no-quorum")
	assert.Zero(t, ok, "no write may be acknowledged without quorum")
	assert.Equal(t, 20, failed)
	assert.Equal(t, before, len(acked))
	// The group committer's publishes fail within their deadline, and it reports the stall.
	for i := 0; i < 5; i++ {
		start := time.Now()
		assert.Error(t, gcPublish(fmt.Sprintf("gc-no-quorum-%d", i), time.Minute), "no write may be acknowledged without quorum")
		assert.Less(t, time.Since(start), 10*gcfg.Timeout, "a publish waited past its deadline")
	}
	assert.Eventually(t, func() bool { return g.Check(context.Background()) != nil }, 10*time.Second, 100*time.Millisecond,
		"the committer never reported that JetStream stopped answering")

	// Heal: restart both on their data; every acknowledged write is there.
	nodes[leader].start(t)
	nodes[follower].start(t)
	healed := func() bool {
		return gcPublish(fmt.Sprintf("gc-healed-%d", time.Now().UnixNano()), 5*time.Second) == nil
	}
	require.Eventually(t, healed, 90*time.Second, time.Second, "the group committer never recovered")
	assert.NoError(t, g.Check(context.Background()), "the group committer is healthy again")
	var got map[string]bool
	require.Eventually(t, func() bool {
		got = map[string]bool{}
		c, err := js.OrderedConsumer(context.Background(), event.StreamRaw, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return false
		}
		b, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return false
		}
		for m := range b.Messages() {
			got[string(m.Data())] = true
		}
		return len(got) >= len(acked)
	}, 90*time.Second, time.Second, "acknowledged writes missing after the cluster healed")
	for id := range acked {
		assert.True(t, got[id], "acknowledged write %s lost", id)
	}
}
