package servertest

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// root is the repository root, seen from this package.
const root = "../.."

func loadCompose(t *testing.T, env ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(env), cli.WithResolvedPaths(true))
	require.NoError(t, err)
	return opts.LoadProject(context.Background())
}

// The compose file loads with the same loader docker compose uses (schema, interpolation,
// anchors), refuses to start without an API key, and everything it refers to exists.
func TestComposeFile(t *testing.T) {
	_, err := loadCompose(t)
	require.ErrorContains(t, err, "LOGBOOK_API_KEY", "starting without an API key is refused, naming the variable")
	p, err := loadCompose(t, "LOGBOOK_API_KEY=sk_compose_check_0123456789")
	require.NoError(t, err)

	services := map[string]bool{}
	for name := range p.Services {
		services[name] = true
	}
	for _, want := range []string{"nats-1", "nats-2", "nats-3", "clickhouse", "ingest", "validator", "writer", "queryapi", "proxy"} {
		assert.True(t, services[want], "service %s", want)
	}
	pinned := regexp.MustCompile(`:\d+\.\d+\.\d+(-[a-z0-9]+)?$`)
	for name, s := range p.Services {
		t.Run(name, func(t *testing.T) {
			for _, v := range s.Volumes {
				if v.Type == types.VolumeTypeBind {
					_, err := os.Stat(v.Source)
					assert.NoError(t, err, "bind-mounted file %s", v.Source)
				}
			}
			if s.Build == nil {
				assert.Regexp(t, pinned, s.Image, "images are pinned to a full version")
				return
			}
			dockerfile := filepath.Join(s.Build.Context, s.Build.Dockerfile)
			checkDockerfile(t, s.Build.Context, dockerfile)
			svc := s.Build.Args["SERVICE"]
			require.NotNil(t, svc, "build arg SERVICE")
			assert.Equal(t, name, *svc)
			assert.FileExists(t, filepath.Join(root, *svc, "cmd", *svc, "main.go"))
			assert.Equal(t, "3", deref(s.Environment["LOGBOOK_STREAM_REPLICAS"]), "streams are replicated on the cluster")
			assert.Contains(t, deref(s.Environment["LOGBOOK_NATS_URL"]), "nats-3:4222", "every node is a seed")
			// Scaling (--scale validator=3) must be able to start more replicas of any service.
			assert.Empty(t, s.ContainerName, "a fixed container name prevents scaling")
			for _, port := range s.Ports {
				assert.Empty(t, port.Published, "a fixed host port prevents scaling")
			}
		})
	}
	proxy := p.Services["proxy"]
	require.NotEmpty(t, proxy.Ports)
	assert.Equal(t, "8080", proxy.Ports[0].Published, "one origin on :8080")
	caddy, err := os.ReadFile(filepath.Join(root, "deploy/caddy/Caddyfile"))
	require.NoError(t, err)
	for _, upstream := range []string{"dynamic a ingest 8080", "dynamic a queryapi 8080", "path /audit_logs/events"} {
		assert.Contains(t, string(caddy), upstream)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkDockerfile checks a service Dockerfile: several stages, a static build, a non-root final
// stage, and every file it copies from the context present.
func checkDockerfile(t *testing.T, context, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err, "Dockerfile %s", path)
	defer f.Close()
	var froms int
	var user, cgoOff bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			froms++
			user = false
		case "USER":
			user = len(fields) > 1 && !strings.HasPrefix(fields[1], "root") && fields[1] != "0"
		case "ENV", "RUN":
			cgoOff = cgoOff || strings.Contains(sc.Text(), "CGO_ENABLED=0")
		case "COPY":
			if strings.HasPrefix(fields[1], "--from") {
				continue
			}
			for _, src := range fields[1 : len(fields)-1] {
				_, err := os.Stat(filepath.Join(context, src))
				assert.NoError(t, err, "%s copies %s", filepath.Base(path), src)
			}
		}
	}
	assert.GreaterOrEqual(t, froms, 2, "multi-stage")
	assert.True(t, user, "the final stage runs as a non-root user")
	assert.True(t, cgoOff, "binaries are built with CGO_ENABLED=0")
}

// buildTags returns the -tags value of the Dockerfile's go build.
func buildTags(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/docker/Dockerfile"))
	require.NoError(t, err)
	m := regexp.MustCompile(`go build[^\n]*-tags[ =](\S+)`).FindSubmatch(b)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// The four images' binaries build as the Dockerfile builds them, with CGO_ENABLED=0, and come out
// static (no ELF interpreter), as distroless/static needs.
func TestServiceBinariesBuildStatic(t *testing.T) {
	out := t.TempDir()
	tags := buildTags(t)
	for _, svc := range []string{"ingest", "validator", "writer", "queryapi"} {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(out, svc)
			cmd := exec.Command("go", "build", "-tags", tags, "-o", bin, "./"+svc+"/cmd/"+svc)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			msg, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", msg)
			e, err := elf.Open(bin)
			require.NoError(t, err)
			defer e.Close()
			for _, p := range e.Progs {
				assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s is dynamically linked", svc)
			}
		})
	}
}

// The three NATS nodes form one cluster: distinct names, every node routed to the others, and
// JetStream on disk with an fsync after every write.
func TestNATSClusterConfigs(t *testing.T) {
	names := map[string]bool{}
	for i := 1; i <= 3; i++ {
		opts, err := server.ProcessConfigFile(filepath.Join(root, "deploy/nats", "nats-"+string(rune('0'+i))+".conf"))
		require.NoError(t, err)
		names[opts.ServerName] = true
		assert.Equal(t, "logbook", opts.Cluster.Name)
		assert.Len(t, opts.Routes, 3)
		assert.True(t, opts.JetStream)
		assert.True(t, opts.SyncAlways)
	}
	assert.Len(t, names, 3, "each node has its own server_name")
}
