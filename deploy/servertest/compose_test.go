package servertest

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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

// composeSecrets are the secrets an operator sets for the compose file (test values, each one
// distinct so that where it ends up can be traced).
var composeSecrets = map[string]string{
	"LOGBOOK_API_KEY":       "sk_compose_check_0123456789abcdef0123",
	"LOGBOOK_NATS_PASSWORD": "natsclient0c0ffee0123456789",
	"NATS_ROUTE_PASSWORD":   "natsroute0c0ffee0123456789",
	"CLICKHOUSE_PASSWORD":   "clickhouse0c0ffee0123456789",
}

// composeEnv returns composeSecrets as KEY=value, without the names in except.
func composeEnv(except ...string) []string {
	var env []string
	for k, v := range composeSecrets {
		if !slices.Contains(except, k) {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// loadSecuredCompose loads the compose file with every secret set.
func loadSecuredCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(t, composeEnv()...)
	require.NoError(t, err)
	return p
}

// The compose file loads with the same loader docker compose uses (schema, interpolation,
// anchors), refuses to start without each secret, and everything it refers to exists.
func TestComposeFile(t *testing.T) {
	for name := range composeSecrets {
		_, err := loadCompose(t, composeEnv(name)...)
		require.ErrorContains(t, err, name, "starting without %s is refused, naming the variable", name)
	}
	p := loadSecuredCompose(t)

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

// dockerfileBuild returns the go build flags of the Dockerfile's build stage: its -tags and
// -ldflags. Its GOFLAGS=-trimpath is left out: it changes nothing that is checked here, and it
// would compile every package again outside the cache the other tests fill (minutes on 2 cores).
func dockerfileBuild(t *testing.T) (tags string, flags []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/docker/Dockerfile"))
	require.NoError(t, err)
	if m := regexp.MustCompile(`go build[^\n]*-tags[ =](\S+)`).FindSubmatch(b); m != nil {
		tags = string(m[1])
	}
	flags = []string{"-tags", tags}
	if m := regexp.MustCompile(`go build[^\n]*-ldflags="([^"]*)"`).FindSubmatch(b); m != nil {
		flags = append(flags, "-ldflags", string(m[1]))
	}
	return tags, flags
}

// The four images' binaries build as the Dockerfile builds them, with CGO_ENABLED=0, and come out
// static (no ELF interpreter), as distroless/static needs. One go build for the four shares the
// work on their common packages; the Dockerfile's flags (-ldflags="-s -w", no DWARF) also make the
// links cheaper than a default build.
func TestServiceBinariesBuildStatic(t *testing.T) {
	out := t.TempDir()
	_, flags := dockerfileBuild(t)
	require.Contains(t, flags, "-tags")
	args := append(append([]string{"build"}, flags...), "-o", out+string(filepath.Separator))
	for _, svc := range serviceMains {
		args = append(args, "./"+svc+"/cmd/"+svc)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", msg)
	for _, svc := range serviceMains {
		e, err := elf.Open(filepath.Join(out, svc))
		require.NoError(t, err, svc)
		for _, p := range e.Progs {
			assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s is dynamically linked", svc)
		}
		e.Close()
	}
}

// serviceMains are the four service binaries (ingest/cmd/ingest, …).
var serviceMains = []string{"ingest", "validator", "writer", "queryapi"}

// The service binaries do not link nats-server: its init starts a /proc poller in every process,
// and image scanners would report its advisories against every service. Only the single process
// (deploy/logbook, through pkg/natsembed) and tests embed the server.
func TestServiceBinariesDoNotLinkNATSServer(t *testing.T) {
	tags, _ := dockerfileBuild(t)
	args := []string{"list", "-tags", tags, "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`}
	for _, svc := range serviceMains {
		args = append(args, "./"+svc+"/cmd/"+svc)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, len(serviceMains))
	for _, line := range lines {
		deps := strings.Fields(line)
		var server []string
		for _, dep := range deps[1:] {
			if strings.HasPrefix(dep, "github.com/nats-io/nats-server") {
				server = append(server, dep)
			}
		}
		assert.Empty(t, server, "%s links nats-server", deps[0])
	}
}
