package natsx_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"

	"github.com/logbookhq/logbook/pkg/natsx"
)

// Services started together on a fresh three-node cluster all create the streams and buckets at
// once. JetStream answered none of the concurrent creates of one stream before their timeout
// (nats-server 2.15.3), so every process exited on start-up; Prepare retries a timed-out attempt
// after a random pause, and every process starts.
func TestPrepareConcurrentlyOnAFreshCluster(t *testing.T) {
	t.Parallel()
	clusterPorts := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range clusterPorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var urls []string
	for i := range 3 {
		n := &clusterNode{opts: &server.Options{
			ServerName: fmt.Sprintf("p%d", i), Host: "127.0.0.1", Port: freePort(t),
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "logbook", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  routes,
		}}
		n.start(t)
		t.Cleanup(n.stop)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port))
	}
	limits := natsx.DefaultStreamLimits()
	limits.Replicas = 3
	var wg sync.WaitGroup
	errs := make([]error, 4)
	took := make([]time.Duration, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, js, err := natsx.Connect(strings.Join(urls, ","), fmt.Sprintf("service-%d", i))
			if err != nil {
				errs[i] = err
				return
			}
			defer nc.Close()
			start := time.Now()
			errs[i] = natsx.Prepare(context.Background(), js, limits) // as the services do

			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "process %d could not prepare the streams and buckets", i)
	}
	t.Logf("prepared in %v", took)
}
