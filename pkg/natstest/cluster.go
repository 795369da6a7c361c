package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// Cluster is a three-node JetStream cluster inside the test process.
type Cluster struct {
	// JS holds a connection to each node, in node order; each reconnects to its node only.
	JS    []jetstream.JetStream
	opts  []*server.Options
	nodes []*server.Server
}

// Stop shuts node i down (its data stays for Start).
func (c *Cluster) Stop(i int) {
	c.nodes[i].Shutdown()
	c.nodes[i].WaitForShutdown()
}

// Start starts node i again on its data.
func (c *Cluster) Start(t testing.TB, i int) {
	t.Helper()
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		t.Fatalf("failed to start nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatalf("nats-server %s did not start", c.opts[i].ServerName)
	}
	c.nodes[i] = s
}

// NewCluster starts a three-node JetStream cluster on loopback inside the test process (file
// storage, sync always), prepares Logbook's streams and buckets with three replicas, and returns a
// connection to each node (in node order). Reads a node answers from its own replica (direct
// gets) can lag the leader here, as in production.
func NewCluster(t testing.TB) *Cluster {
	c := &Cluster{}
	t.Helper()
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("failed to find a free port: %v", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	routePorts := []int{free(), free(), free()}
	var routes []*url.URL
	for _, p := range routePorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var urls []string
	for i := range routePorts {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: free(),
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "logbook", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  routes,
		}
		c.opts, c.nodes = append(c.opts, opts), append(c.nodes, nil)
		c.Start(t, i)
		t.Cleanup(func() { c.Stop(i) })
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", opts.Port))
	}
	for _, u := range urls {
		nc, js, err := natsx.Connect(u, t.Name())
		if err != nil {
			t.Fatalf("failed to connect: %v", err)
		}
		t.Cleanup(nc.Close)
		c.JS = append(c.JS, js)
	}
	js := c.JS[0]
	limits := natsx.DefaultStreamLimits()
	limits.Replicas = 3
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := natsx.Prepare(context.Background(), js, limits)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster never accepted R3 streams: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
