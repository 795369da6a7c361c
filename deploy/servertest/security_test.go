package servertest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natsx"
)

var (
	logbookServices = []string{"ingest", "validator", "writer", "queryapi"}
	natsNodes       = []string{"nats-1", "nats-2", "nats-3"}
	secretName      = regexp.MustCompile(`PASSWORD|SECRET|TOKEN|API_KEY|^NATS_ROUTE_\d`)
)

// No secret is written in the compose file: every variable that holds one gets its value from
// the operator's environment (TestComposeFile shows that a missing one stops compose).
func TestComposeHasNoBakedInSecrets(t *testing.T) {
	p := loadSecuredCompose(t)
	for name, s := range p.Services {
		for k, v := range s.Environment {
			if !secretName.MatchString(k) {
				continue
			}
			require.NotNil(t, v, "%s: %s has no value", name, k)
			fromOperator := false
			for _, secret := range composeSecrets {
				fromOperator = fromOperator || regexp.MustCompile(regexp.QuoteMeta(secret)).MatchString(*v)
			}
			assert.True(t, fromOperator, "%s: %s=%q is written in the compose file, not taken from the environment", name, k, *v)
		}
	}
	for _, svc := range logbookServices {
		env := p.Services[svc].Environment
		assert.Equal(t, composeSecrets["CLICKHOUSE_PASSWORD"], deref(env["LOGBOOK_CLICKHOUSE_PASSWORD"]), svc)
		assert.Equal(t, composeSecrets["LOGBOOK_NATS_PASSWORD"], deref(env["LOGBOOK_NATS_PASSWORD"]), svc)
		assert.NotEmpty(t, deref(env["LOGBOOK_NATS_USER"]), svc)
	}
	assert.Equal(t, composeSecrets["CLICKHOUSE_PASSWORD"], deref(p.Services["clickhouse"].Environment["CLICKHOUSE_PASSWORD"]))
}

// Only the proxy is published beyond the host: every other published port (the services' admin
// listeners: metrics, readiness) binds the host's loopback.
func TestComposeAdminPortsOnLoopback(t *testing.T) {
	p := loadSecuredCompose(t)
	for name, s := range p.Services {
		if name == "proxy" {
			continue
		}
		for _, port := range s.Ports {
			assert.Equal(t, "127.0.0.1", port.HostIP, "%s publishes port %d beyond the host's loopback", name, port.Target)
		}
	}
	for _, svc := range logbookServices {
		require.NotEmpty(t, p.Services[svc].Ports, svc)
	}
}

// natsNodeOptions is what the NATS node of the compose file runs with: its configuration file
// (the bind mount its command names) read with the environment compose gives the container.
func natsNodeOptions(t *testing.T, p *types.Project, name string) *server.Options {
	t.Helper()
	s, ok := p.Services[name]
	require.True(t, ok, name)
	for k, v := range s.Environment {
		t.Setenv(k, deref(v))
	}
	i := slices.Index(s.Command, "-c")
	require.True(t, i >= 0 && i+1 < len(s.Command), "%s: no -c in %v", name, s.Command)
	var file string
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == s.Command[i+1] {
			file = v.Source
		}
	}
	require.NotEmpty(t, file, "%s: %s is not mounted", name, s.Command[i+1])
	opts, err := server.ProcessConfigFile(file)
	require.NoError(t, err, "%s: %s", name, file)
	return opts
}

// The three NATS nodes form one cluster, each requiring the credentials the services are given:
// distinct names, every node routed to the others with the route credentials, JetStream on disk
// with an fsync after every write, monitoring on the container's loopback only.
func TestComposeNATSRequiresCredentials(t *testing.T) {
	p := loadSecuredCompose(t)
	names := map[string]bool{}
	client := p.Services["ingest"].Environment
	for _, node := range natsNodes {
		opts := natsNodeOptions(t, p, node)
		names[opts.ServerName] = true
		assert.True(t, opts.JetStream)
		assert.True(t, opts.SyncAlways)
		assert.Equal(t, "127.0.0.1", opts.HTTPHost, "monitoring stays inside the container")
		assert.Equal(t, deref(client["LOGBOOK_NATS_USER"]), opts.Username, "%s: clients authenticate as the services do", node)
		assert.Equal(t, composeSecrets["LOGBOOK_NATS_PASSWORD"], opts.Password, node)
		assert.Equal(t, "logbook", opts.Cluster.Name)
		assert.NotEmpty(t, opts.Cluster.Username, "%s: routes authenticate", node)
		assert.Equal(t, composeSecrets["NATS_ROUTE_PASSWORD"], opts.Cluster.Password, node)
		require.Len(t, opts.Routes, 3)
		for _, r := range opts.Routes {
			pass, _ := r.User.Password()
			assert.Equal(t, opts.Cluster.Username, r.User.Username(), "%s: route %s", node, r.Host)
			assert.Equal(t, opts.Cluster.Password, pass, "%s: route %s presents the route password", node, r.Host)
		}
	}
	assert.Len(t, names, 3, "each node has its own server_name")
}

// The compose file's NATS cluster, run here (its three configurations with the compose
// environment, on loopback ports): it forms, the services' credentials work, and a client or a
// route without them is refused.
func TestComposeNATSClusterRefusesStrangers(t *testing.T) {
	p := loadSecuredCompose(t)
	routePorts := map[string]int{}
	for _, node := range natsNodes {
		routePorts[node] = freePort(t)
	}
	var servers []*server.Server
	for _, node := range natsNodes {
		opts := natsNodeOptions(t, p, node)
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.StoreDir, opts.NoLog, opts.NoSigs = t.TempDir(), true, true
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", routePorts[node]
		for _, r := range opts.Routes {
			r.Host = fmt.Sprintf("127.0.0.1:%d", routePorts[r.Hostname()])
		}
		servers = append(servers, runNATS(t, opts))
	}
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if len(routedTo(t, s)) != 2 {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "the cluster did not form with the route credentials")

	env := p.Services["ingest"].Environment
	user, pass := deref(env["LOGBOOK_NATS_USER"]), deref(env["LOGBOOK_NATS_PASSWORD"])
	for _, s := range servers {
		_, _, err := natsx.Connect(s.ClientURL(), "stranger")
		assert.ErrorIs(t, err, nats.ErrAuthorization, "a client without credentials")
		_, _, err = natsx.Connect(s.ClientURL(), "guesser", nats.UserInfo(user, "guess"))
		assert.ErrorIs(t, err, nats.ErrAuthorization, "a client with a wrong password")
	}
	nc, js, err := natsx.Connect(servers[0].ClientURL(), "service", nats.UserInfo(user, pass))
	require.NoError(t, err)
	defer nc.Close()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "JetStream did not answer the service")
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "AUTH_CHECK", Subjects: []string{"auth.check"}, Replicas: 3})
	require.NoError(t, err, "an R3 stream on the authenticated cluster")

	// A node that knows the cluster's name and addresses but not the route password is never
	// admitted: one route without credentials, one with a wrong password.
	strangerRoutes := []*url.URL{
		{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts["nats-1"])},
		{Scheme: "nats", User: url.UserPassword("logbook-route", "guess"), Host: fmt.Sprintf("127.0.0.1:%d", routePorts["nats-2"])},
	}
	stranger := runNATS(t, &server.Options{ServerName: "stranger", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "logbook", Host: "127.0.0.1", Port: -1}, Routes: strangerRoutes})
	time.Sleep(2 * time.Second) // route attempts are retried every second
	assert.Empty(t, routedTo(t, stranger), "a route without the credentials was admitted")
	for _, s := range servers {
		assert.NotContains(t, routedTo(t, s), "stranger", "%s admitted a stranger", s.Name())
	}
}

// routedTo names the servers s has routes to (with route pooling, several connections each).
func routedTo(t *testing.T, s *server.Server) []string {
	t.Helper()
	rz, err := s.Routez(nil)
	require.NoError(t, err)
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	return names
}

func runNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "nats-server %s not ready", opts.ServerName)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
