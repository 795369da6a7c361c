package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/deploy/logbook/proc"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// natsNode is one nats-server of the cluster: its configuration file, written by the test, and the
// addresses it listens on (kept across restarts).
type natsNode struct {
	*proc.NATS
	name string // server_name
	conf string
}

// natsCluster is three nats-servers as separate OS processes, clustered over routes with the
// credentials deploy/nats/nats-N.conf require. The third node runs in a network namespace of its
// own, joined to the host by a veth pair, when one can be made (cut), so it can be cut off from
// the others and from the services without being stopped.
type natsCluster struct {
	nodes []*natsNode
	cut   *netCut // nil: no network namespace here; the cut phase freezes the node instead
	// cutErr says why there is no network namespace.
	cutErr error
	// URLs is the client URL list the services get (LOGBOOK_NATS_URL).
	URLs string
	nc   *natsgo.Conn
	js   jetstream.JetStream
}

// nodeConf is deploy/nats/nats-N.conf for one machine: the same settings (JetStream on disk with
// an fsync after every write, 1 MB payloads, client and route credentials from the environment),
// with loopback (or namespace) addresses and ports in place of the containers' fixed ones.
const nodeConf = `# Written by deploy/logbook/cluster: deploy/nats/nats-N.conf with this machine's addresses.
server_name: %[1]s
listen: "%[2]s"
http: "%[3]s"
max_payload: 1MB

authorization {
  user: $LOGBOOK_NATS_USER
  password: $LOGBOOK_NATS_PASSWORD
}

jetstream {
  store_dir: "%[4]s"
  sync_interval: always
}

cluster {
  name: logbook
  listen: "%[5]s"
  authorization {
    user: logbook-route
    password: $NATS_ROUTE_PASSWORD
  }
  # NATS_ROUTE_1..3: nats://logbook-route:<password>@<host>:<port>, as docker-compose.yml builds them.
  routes: [
    $NATS_ROUTE_1
    $NATS_ROUTE_2
    $NATS_ROUTE_3
  ]
}
`

// startNATSCluster writes the three nodes' configurations into a temporary directory and starts
// them (the third inside a network namespace where one can be made), then waits until each is
// healthy and connects the test's own client.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	c.cut, c.cutErr = newNetCut(t)
	hosts := []string{"127.0.0.1", "127.0.0.1", "127.0.0.1"}
	routeHosts := []string{"127.0.0.1", "127.0.0.1", "127.0.0.1"}
	if c.cut != nil {
		// The first two nodes take routes on the host's end of the veth pair (the third node
		// cannot reach the host's loopback); the third listens on its own end only.
		routeHosts = []string{c.cut.hostIP, c.cut.hostIP, c.cut.nsIP}
		hosts[2] = c.cut.nsIP
	}
	type ports struct{ client, cluster, monitor string }
	var addrs []ports
	env := []string{"LOGBOOK_NATS_USER=" + natsUser, "LOGBOOK_NATS_PASSWORD=" + natsPassword, "NATS_ROUTE_PASSWORD=" + routePassword}
	for i := range 3 {
		p := ports{client: hostPort(t, hosts[i]), cluster: hostPort(t, routeHosts[i]), monitor: hostPort(t, hosts[i])}
		addrs = append(addrs, p)
		env = append(env, fmt.Sprintf("NATS_ROUTE_%d=nats://logbook-route:%s@%s", i+1, routePassword, p.cluster))
	}
	dir := t.TempDir()
	var urls []string
	for i, p := range addrs {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf(nodeConf, name, p.client, p.monitor, filepath.Join(dir, name+"-data"), p.cluster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		path, args := bins["nats-server"], []string{"-c", conf}
		if i == 2 && c.cut != nil {
			path, args = "ip", append([]string{"netns", "exec", c.cut.ns, bins["nats-server"]}, args...)
		}
		n := &natsNode{name: name, conf: conf, NATS: &proc.NATS{
			Process: proc.Start(t, name, path, args, env),
			URL:     "nats://" + p.client,
			Monitor: "http://" + p.monitor,
		}}
		c.nodes = append(c.nodes, n)
		urls = append(urls, n.URL)
	}
	for _, n := range c.nodes {
		n.WaitHealthy(t)
	}
	c.URLs = strings.Join(urls, ",")
	var err error
	// The test's own client notices a node that stopped answering within seconds (a cut), so that
	// its look-ups move to another node.
	c.nc, c.js, err = natsx.Connect(c.URLs, "logbook-cluster-test", natsgo.UserInfo(natsUser, natsPassword),
		natsgo.PingInterval(time.Second), natsgo.MaxPingsOutstanding(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	return c
}

// hostPort returns host with a port that was free a moment ago.
func hostPort(t *testing.T, host string) string {
	t.Helper()
	if host == "127.0.0.1" {
		return proc.FreeAddr(t)
	}
	// An address in the namespace cannot be probed from here: take a free loopback port, which
	// is as good a guess on an interface with nothing else bound.
	_, port, _ := strings.Cut(proc.FreeAddr(t), ":")
	return host + ":" + port
}

// node returns the node named name (a server_name), or nil.
func (c *natsCluster) node(name string) *natsNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// leader returns the server name of stream's leader ("" while it has none or cannot be asked).
func (c *natsCluster) leader(stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// waitLeader waits until stream has a leader and returns its name.
func (c *natsCluster) waitLeader(t *testing.T, stream string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.leader(stream); l != "" {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("stream %s has no leader after 60s", stream)
	return ""
}

// moveLeader asks stream's leader to step down in favour of the node named to (JetStream's
// preferred placement), and waits until it has.
func (c *natsCluster) moveLeader(t *testing.T, stream, to string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c.leader(stream) == to {
			return
		}
		body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
		res, err := c.nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, body, 5*time.Second)
		if err == nil {
			var r struct {
				Error *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if json.Unmarshal(res.Data, &r) == nil && r.Error != nil {
				t.Logf("stepdown of %s to %s: %s", stream, to, r.Error.Description)
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("the leader of %s never moved to %s", stream, to)
}

// waitCurrent waits until every stream and durable consumer has a leader and all its replicas
// are current: a node restarted or reconnected has caught up, so another may be lost without
// losing quorum.
func (c *natsCluster) waitCurrent(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	why := ""
	for time.Now().Before(deadline) {
		if why = c.notCurrent(); why == "" {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the cluster did not catch up within %s: %s", timeout, why)
}

// notCurrent says what is not caught up yet, or "".
func (c *natsCluster) notCurrent() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := c.js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return "listing streams: " + err.Error()
	}
	for _, name := range streams {
		s, err := c.js.Stream(ctx, name)
		if err != nil {
			return name + ": " + err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return name + ": " + err.Error()
		}
		if why := replicasBehind(info.Cluster, info.Config.Replicas); why != "" {
			return "stream " + name + ": " + why
		}
		consumers := s.ListConsumers(ctx)
		for ci := range consumers.Info() {
			if ci.Config.Durable == "" {
				continue // ephemeral watchers are recreated by their clients
			}
			if why := replicasBehind(ci.Cluster, max(ci.Config.Replicas, info.Config.Replicas)); why != "" {
				return "consumer " + name + "/" + ci.Name + ": " + why
			}
		}
		if err := consumers.Err(); err != nil {
			return name + " consumers: " + err.Error()
		}
	}
	return ""
}

func replicasBehind(ci *jetstream.ClusterInfo, replicas int) string {
	switch {
	case ci == nil:
		return "no cluster information"
	case ci.Leader == "":
		return "no leader"
	case len(ci.Replicas) != replicas-1:
		return fmt.Sprintf("%d followers, want %d", len(ci.Replicas), replicas-1)
	}
	for _, p := range ci.Replicas {
		if !p.Current || p.Offline {
			return fmt.Sprintf("%s is not current (offline %v, lag %d)", p.Name, p.Offline, p.Lag)
		}
	}
	return ""
}

// netCut is a network namespace holding one NATS node, joined to the host by a veth pair whose
// host end can be taken down: the node then neither reaches nor is reached by anything, while it
// keeps running (a partition, not a crash).
type netCut struct {
	ns, hostIf, hostIP, nsIP string
}

// newNetCut makes the namespace and the veth pair (link-local addresses, a /30 nothing else on
// this machine uses), or says why it cannot.
func newNetCut(t *testing.T) (*netCut, error) {
	t.Helper()
	if os.Getenv("LOGBOOK_CLUSTER_NETNS") == "0" {
		return nil, fmt.Errorf("LOGBOOK_CLUSTER_NETNS=0")
	}
	removeStaleNetns()
	id := os.Getpid()
	c := &netCut{ns: fmt.Sprintf("logbook-cluster-%d", id), hostIf: fmt.Sprintf("lbc%dh", id)}
	nsIf := fmt.Sprintf("lbc%dn", id)
	inUse, _ := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	for x := 100 + id%90; ; x++ {
		if x == 169 || x > 250 {
			if x > 250 {
				return nil, fmt.Errorf("no free link-local /30 for the veth pair")
			}
			continue
		}
		if !strings.Contains(string(inUse), fmt.Sprintf("169.254.%d.", x)) {
			c.hostIP, c.nsIP = fmt.Sprintf("169.254.%d.1", x), fmt.Sprintf("169.254.%d.2", x)
			break
		}
	}
	if err := ipCmd("netns", "add", c.ns); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		_ = ipCmd("link", "del", c.hostIf)
		_ = ipCmd("netns", "del", c.ns)
	})
	for _, args := range [][]string{
		{"link", "add", c.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", c.ns},
		{"addr", "add", c.hostIP + "/30", "dev", c.hostIf},
		{"link", "set", c.hostIf, "up"},
		{"netns", "exec", c.ns, "ip", "addr", "add", c.nsIP + "/30", "dev", nsIf},
		{"netns", "exec", c.ns, "ip", "link", "set", nsIf, "up"},
		{"netns", "exec", c.ns, "ip", "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// removeStaleNetns deletes the namespaces (and veth pairs) of earlier runs whose process is gone
// without its cleanup having run (a run killed by its timeout).
func removeStaleNetns() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ")
		pid, ok := strings.CutPrefix(name, "logbook-cluster-")
		if !ok {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // its run is still going
		}
		_ = ipCmd("link", "del", "lbc"+pid+"h")
		_ = ipCmd("netns", "del", name)
	}
}

// Cut takes the host's end of the veth pair down: every packet to or from the node is dropped.
func (c *netCut) Cut() error { return ipCmd("link", "set", c.hostIf, "down") }

// Heal brings it back up.
func (c *netCut) Heal() error { return ipCmd("link", "set", c.hostIf, "up") }

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
