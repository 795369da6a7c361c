package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// APIKey is the key the benchmark's Logbook accepts.
const APIKey = "sk_bench_0123456789abcdefghijklmnop"

// Server is the single-process Logbook under test, a child process of the benchmark.
type Server struct {
	cmd   *exec.Cmd
	Base  string // http://127.0.0.1:port
	NATS  string // nats://127.0.0.1:port
	Pprof string // 127.0.0.1:port
	Log   string // its stderr
	nc    *nats.Conn
	js    jetstream.JetStream
	exit  chan error

	stopOnce sync.Once
}

// BuildLogbook builds the single-process binary into dir, from the workspace the benchmark runs in.
func BuildLogbook(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "logbook")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/logbookhq/logbook/deploy/logbook")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("failed to build logbook: %w", err)
	}
	return bin, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// StartServer starts bin on dataDir with the rate limit off and streams large enough for the
// data set, and returns once it answers /healthz.
func StartServer(ctx context.Context, bin, dataDir string, streamBytes int64) (*Server, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	s := &Server{Base: "http://" + addrs[0], NATS: "nats://" + addrs[1], Pprof: addrs[2],
		Log: filepath.Join(dataDir, "logbook.log"), exit: make(chan error, 1)}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	logf, err := os.Create(s.Log)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin)
	s.cmd.Env = append(os.Environ(),
		"LOGBOOK_DATA_DIR="+dataDir,
		"LOGBOOK_ADDR="+addrs[0],
		"LOGBOOK_NATS_LISTEN="+addrs[1],
		"LOGBOOK_PPROF_ADDR="+addrs[2],
		"LOGBOOK_API_KEY="+APIKey,
		"LOGBOOK_RATE_LIMIT=0", // per-key limiting off: one key drives all the load
		"LOGBOOK_STREAM_MAX_BYTES="+strconv.FormatInt(streamBytes, 10),
		"LOGBOOK_LOG_LEVEL=warn",
		"LOGBOOK_LOG_STREAM_RETRY_MAX=2s", // the catch-up phase measures delivery, not a long backoff
	)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("failed to start logbook: %w", err)
	}
	go func() { s.exit <- s.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(s.Base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-s.exit:
			return nil, fmt.Errorf("logbook exited at start-up (%v): %s", err, s.tail())
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("logbook did not answer /healthz within 90s: %s", s.tail())
		}
	}
	if s.nc, err = nats.Connect(s.NATS, nats.Name("bench-observer")); err != nil {
		s.Stop()
		return nil, fmt.Errorf("failed to connect to logbook's nats: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(s.Log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Alive reports an error if the server has exited.
func (s *Server) Alive() error {
	select {
	case err := <-s.exit:
		s.exit <- err
		return fmt.Errorf("logbook exited (%v): %s", err, s.tail())
	default:
		return nil
	}
}

// ResetPeak resets the process's peak RSS (VmHWM) to its current RSS.
func (s *Server) ResetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", s.Pid()), []byte("5"), 0)
}

// Memory returns the process's current (VmRSS) and peak (VmHWM) resident set in bytes.
func (s *Server) Memory() (rss, peak int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.Pid()))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

// CPUTicks is the CPU time (user + system, in clock ticks) the process has used so far.
func (s *Server) CPUTicks() int64 { return procTicks(fmt.Sprintf("/proc/%d/stat", s.Pid())) }

// CPUProfile collects a CPU profile of the server over d into path.
func (s *Server) CPUProfile(ctx context.Context, d time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.Pprof, max(1, int(d.Seconds())))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("failed to collect a profile (LOGBOOK_PPROF_ADDR): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile: %s: %s", resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Drained reports whether everything JetStream accepted has been validated and stored: both
// durable consumers have acknowledged up to their stream's last message. The writer acknowledges
// only after its INSERT succeeded, so drained means visible in search.
func (s *Server) Drained(ctx context.Context) (bool, error) {
	for _, c := range [][2]string{{event.StreamRaw, event.ConsumerValidator}, {event.StreamValid, event.ConsumerWriter}} {
		st, err := s.js.Stream(ctx, c[0])
		if err != nil {
			return false, err
		}
		si, err := st.Info(ctx)
		if err != nil {
			return false, err
		}
		cons, err := st.Consumer(ctx, c[1])
		if err != nil {
			return false, err
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return false, err
		}
		if ci.AckFloor.Stream < si.State.LastSeq || ci.NumAckPending > 0 || ci.NumPending > 0 {
			return false, nil
		}
	}
	return true, nil
}

// WaitDrained polls Drained every interval until it holds, and returns when it first held.
func (s *Server) WaitDrained(ctx context.Context, interval, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := s.Drained(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if err := s.Alive(); err != nil {
			return time.Time{}, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the pipeline did not drain within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// Rejected is how many events the validator refused so far.
func (s *Server) Rejected(ctx context.Context) (uint64, error) {
	st, err := s.js.Stream(ctx, event.StreamRejected)
	if err != nil {
		return 0, err
	}
	si, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return si.State.Msgs, nil
}

// Stop ends the server with SIGTERM (SIGKILL after 30 s). Calling it again does nothing.
func (s *Server) Stop() { s.stopOnce.Do(s.stop) }

func (s *Server) stop() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exit
	}
}

// procTicks reads utime+stime from a /proc/<pid>/stat file.
func procTicks(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// busyTicks is the machine's total non-idle CPU time (all cores) from /proc/stat, in ticks.
func busyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are already in user
			continue
		}
		busy += n
	}
	return busy
}

var errSkipped = errors.New("skipped")
