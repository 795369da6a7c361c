// Package proc runs Logbook's binaries and nats-server as separate OS processes for tests: the
// separate services (`ingest`, `validator`, `writer`, `queryapi`, the real mains), the single
// process in any role (`logbook`), and a nats-server built from the module version the project
// pins. Processes are killed (SIGKILL), stopped (SIGTERM) and restarted with the same arguments,
// and their output is kept for the test's failure message.
package proc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is a main package to build.
type Binary struct {
	// Name is the executable's file name.
	Name string
	// Package is the main package's import path.
	Package string
	// Tags are the build tags ("nochdb" for the service binaries, as the Dockerfile builds them).
	Tags string
}

// The binaries a scaled-out Logbook runs.
var (
	NATSServer = Binary{Name: "nats-server", Package: "github.com/nats-io/nats-server/v2"}
	Logbook    = Binary{Name: "logbook", Package: "github.com/logbookhq/logbook/deploy/logbook"}
	Ingest     = Binary{Name: "ingest", Package: "github.com/logbookhq/logbook/ingest/cmd/ingest", Tags: "nochdb"}
	Validator  = Binary{Name: "validator", Package: "github.com/logbookhq/logbook/validator/cmd/validator", Tags: "nochdb"}
	Writer     = Binary{Name: "writer", Package: "github.com/logbookhq/logbook/writer/cmd/writer", Tags: "nochdb"}
	QueryAPI   = Binary{Name: "queryapi", Package: "github.com/logbookhq/logbook/queryapi/cmd/queryapi", Tags: "nochdb"}
)

// Build builds bins into dir, one go build per set of tags (sharing the work on common packages),
// and returns each binary's path by name. It runs from the workspace, so the nats-server is the
// module version go.mod pins.
func Build(ctx context.Context, dir string, bins ...Binary) (map[string]string, error) {
	byTags := map[string][]string{}
	paths := map[string]string{}
	for _, b := range bins {
		byTags[b.Tags] = append(byTags[b.Tags], b.Package)
		paths[b.Name] = filepath.Join(dir, b.Name)
	}
	for tags, pkgs := range byTags {
		args := append([]string{"build", "-tags", tags, "-o", dir + string(filepath.Separator)}, pkgs...)
		cmd := exec.CommandContext(ctx, "go", args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	for name, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("binary %s was not built: %w", name, err)
		}
	}
	return paths, nil
}

// Process is a running (or exited) OS process started by Start.
type Process struct {
	// Name identifies the process in logs and failure messages.
	Name string
	path string
	args []string
	env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *logBuffer
}

// Start starts path with args and env (added to the test's own environment) and kills it when the
// test ends; the test's failure message then shows the tail of its output.
func Start(t testing.TB, name, path string, args, env []string) *Process {
	t.Helper()
	p := &Process{Name: name, path: path, args: args, env: env, out: &logBuffer{}}
	p.start(t)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", p.Name, p.out.tail(4000))
		}
	})
	return p
}

func (p *Process) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() { p.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after grace).
func (p *Process) Stop(grace time.Duration) { p.signal(syscall.SIGTERM, grace) }

func (p *Process) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	<-done
}

// Pause freezes the process (SIGSTOP): to the processes talking to it, it stops answering, while
// its connections stay open.
func (p *Process) Pause() error { return p.send(syscall.SIGSTOP) }

// Resume lets a paused process run again (SIGCONT).
func (p *Process) Resume() error { return p.send(syscall.SIGCONT) }

func (p *Process) send(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("%s was never started", p.Name)
	}
	return cmd.Process.Signal(sig)
}

// Pid is the process id of the current run (0 before it started).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Restart starts the process again with the same arguments and environment; it must have exited.
func (p *Process) Restart(t testing.TB) {
	t.Helper()
	if !p.Exited() {
		t.Fatalf("%s is still running", p.Name)
	}
	p.start(t)
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Output is what the process wrote to stdout and stderr so far (the last 1 MiB).
func (p *Process) Output() string { return p.out.tail(1 << 20) }

// logBuffer keeps the last 1 MiB a process wrote. Safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - 1<<20; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Status GETs url and returns the response's status code, or 0 when nothing answered.
func Status(url string) int {
	c := http.Client{Timeout: 3 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// WaitStatus polls url until it answers want, failing the test after timeout (or at once when p,
// the process serving it, has exited).
func WaitStatus(t testing.TB, p *Process, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := 0
	for time.Now().Before(deadline) {
		if last = Status(url); last == want {
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("%s exited while waiting for %s to answer %d:\n%s", p.Name, url, want, p.out.tail(4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s answered %d, not %d, for %s", url, last, want, timeout)
}
