package chdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The signal test re-runs this binary as a child with childEnv set to the
// scenario and childDirEnv to its data dir.
const (
	childEnv    = "LOGBOOK_CHDB_TEST_CHILD"
	childDirEnv = "LOGBOOK_CHDB_TEST_DIR"
)

func TestMain(m *testing.M) {
	if scenario := os.Getenv(childEnv); scenario != "" {
		os.Exit(runChild(scenario, os.Getenv(childDirEnv)))
	}
	os.Exit(m.Run())
}

// openTest opens the engine on dir, skipping the test when the library has
// not been fetched; the connection is closed when the test ends.
func openTest(t *testing.T, dir string) *Conn {
	t.Helper()
	requireLib(t)
	c, err := Open(DefaultLibPath(), dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func requireLib(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(DefaultLibPath()); err != nil {
		t.Skipf("libchdb.so not found at %s (run `make libchdb` to fetch it): %v", DefaultLibPath(), err)
	}
}

func query(t *testing.T, c *Conn, q, format string, params map[string]string) string {
	t.Helper()
	out, err := c.Query(t.Context(), q, format, params)
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	return string(out)
}

func TestDefaultLibPath(t *testing.T) {
	t.Setenv("LOGBOOK_CHDB_LIB", "/opt/lib/libchdb.so")
	if got := DefaultLibPath(); got != "/opt/lib/libchdb.so" {
		t.Errorf("with LOGBOOK_CHDB_LIB: got %s", got)
	}
	t.Setenv("LOGBOOK_CHDB_LIB", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got, want := DefaultLibPath(), "/xdg/logbook/chdb/26.7.3-stable.1/libchdb.so"; got != want {
		t.Errorf("with XDG_CACHE_HOME: got %s, want %s", got, want)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got, want := DefaultLibPath(), "/home/u/.cache/logbook/chdb/26.7.3-stable.1/libchdb.so"; got != want {
		t.Errorf("with HOME: got %s, want %s", got, want)
	}
}

func TestOpenMissingLibrary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nowhere", "libchdb.so")
	c, err := Open(path, t.TempDir())
	if err == nil {
		c.Close()
		t.Fatal("open succeeded without a library")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "make libchdb") {
		t.Errorf("error should name %s and `make libchdb`: %v", path, err)
	}
}

func TestInsertSelectFormats(t *testing.T) {
	c := openTest(t, t.TempDir())
	query(t, c, "CREATE TABLE events (org String, id UInt64, msg String) ENGINE = MergeTree ORDER BY (org, id)", "TabSeparated", nil)
	query(t, c, `INSERT INTO events FORMAT JSONEachRow
{"org":"a","id":1,"msg":"hello"}
{"org":"b","id":2,"msg":"say \"hi\", then go"}`, "TabSeparated", nil)

	got := query(t, c, "SELECT org, id, msg FROM events ORDER BY id", "JSONCompactEachRow", nil)
	want := `["a", 1, "hello"]` + "\n" + `["b", 2, "say \"hi\", then go"]` + "\n"
	if got != want {
		t.Errorf("JSONCompactEachRow:\ngot  %q\nwant %q", got, want)
	}
	got = query(t, c, "SELECT org, id, msg FROM events ORDER BY id", "CSVWithNames", nil)
	want = `"org","id","msg"` + "\n" + `"a",1,"hello"` + "\n" + `"b",2,"say ""hi"", then go"` + "\n"
	if got != want {
		t.Errorf("CSVWithNames:\ngot  %q\nwant %q", got, want)
	}
}

func TestParamsArePerCall(t *testing.T) {
	c := openTest(t, t.TempDir())
	q := "SELECT {org:String}"
	if got := query(t, c, q, "TabSeparated", map[string]string{"org": "a"}); got != "a\n" {
		t.Fatalf("bound org: got %q", got)
	}
	out, err := c.Query(t.Context(), q, "TabSeparated", nil)
	var engineErr *Error
	if !errors.As(err, &engineErr) {
		t.Fatalf("unbound org: want *Error, got %q, %v", out, err)
	}
	if !strings.Contains(engineErr.Message, "UNKNOWN_QUERY_PARAMETER") {
		t.Errorf("unbound org: unexpected message %q", engineErr.Message)
	}
	// Several parameters of different types in one call.
	got := query(t, c, "SELECT {n:UInt64} + 1, {tags:Array(String)}", "JSONCompactEachRow",
		map[string]string{"n": "41", "tags": "['x','y']"})
	if got != `[42, ["x","y"]]`+"\n" {
		t.Errorf("typed params: got %q", got)
	}
}

func TestParamInjectionIsInert(t *testing.T) {
	c := openTest(t, t.TempDir())
	query(t, c, "CREATE TABLE t (org String) ENGINE = MergeTree ORDER BY org", "TabSeparated", nil)
	evil := "x'; DROP TABLE t --"
	p := map[string]string{"org": evil}
	query(t, c, "INSERT INTO t SELECT {org:String}", "TabSeparated", p)
	got := query(t, c, "SELECT org FROM t WHERE org = {org:String}", "JSONCompactEachRow", p)
	if got != `["x'; DROP TABLE t --"]`+"\n" {
		t.Errorf("got %q", got)
	}
	if got := query(t, c, "EXISTS TABLE t", "TabSeparated", nil); got != "1\n" {
		t.Errorf("table t gone: EXISTS gave %q", got)
	}
}

// TestParamEscaping pins down how the engine reads String values: escaped
// TSV style, so backslash sequences are decoded and a raw tab is refused.
func TestParamEscaping(t *testing.T) {
	c := openTest(t, t.TempDir())
	got := query(t, c, "SELECT {s:String}", "JSONCompactEachRow", map[string]string{"s": `a\\b\tc\nd`})
	if got != `["a\\b\tc\nd"]`+"\n" {
		t.Errorf("escaped value: got %q", got)
	}
	got = query(t, c, "SELECT length({s:String})", "TabSeparated", map[string]string{"s": "a\x00b"})
	if got != "3\n" {
		t.Errorf("value with NUL byte: got %q", got)
	}
	if _, err := c.Query(t.Context(), "SELECT {s:String}", "TabSeparated", map[string]string{"s": "raw\ttab"}); err == nil {
		t.Error("raw tab in a String value was accepted")
	}
}

func TestEngineError(t *testing.T) {
	c := openTest(t, t.TempDir())
	_, err := c.Query(t.Context(), "SELEC 1", "TabSeparated", nil)
	var engineErr *Error
	if !errors.As(err, &engineErr) {
		t.Fatalf("want *Error, got %v", err)
	}
	if !strings.Contains(engineErr.Message, "Syntax error") || !strings.HasPrefix(err.Error(), "clickhouse: ") {
		t.Errorf("unhelpful error: %v", err)
	}
	_, err = c.Query(t.Context(), "SELECT * FROM no_such_table", "TabSeparated", nil)
	if !errors.As(err, &engineErr) || !strings.Contains(engineErr.Message, "no_such_table") {
		t.Errorf("missing table: %v", err)
	}
	// The connection keeps working after errors.
	if got := query(t, c, "SELECT 1", "TabSeparated", nil); got != "1\n" {
		t.Errorf("after error: got %q", got)
	}
}

func TestCanceledContext(t *testing.T) {
	c := openTest(t, t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Query(ctx, "SELECT 1", "TabSeparated", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("want context.Canceled, got %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := openTest(t, t.TempDir())
	query(t, c, "CREATE TABLE c (g UInt8, n UInt64) ENGINE = MergeTree ORDER BY (g, n)", "TabSeparated", nil)
	const workers, rounds, rows = 4, 25, 100
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			p := map[string]string{"g": strconv.Itoa(g), "rows": strconv.Itoa(rows)}
			for range rounds {
				if _, err := c.Query(t.Context(), "INSERT INTO c SELECT {g:UInt8}, number FROM numbers({rows:UInt64})", "TabSeparated", p); err != nil {
					t.Errorf("worker %d insert: %v", g, err)
					return
				}
				out, err := c.Query(t.Context(), "SELECT count() FROM c WHERE g = {g:UInt8}", "TabSeparated", p)
				if err != nil {
					t.Errorf("worker %d count: %v", g, err)
					return
				}
				if _, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
					t.Errorf("worker %d count: %q", g, out)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := query(t, c, "SELECT count() FROM c", "TabSeparated", nil), fmt.Sprintf("%d\n", workers*rounds*rows); got != want {
		t.Errorf("count: got %q, want %q", got, want)
	}
}

// Arguments after the data dir reach the engine as server settings, on every connection of the
// Conn (a session renewed after an error included).
func TestOpenArgsAreServerSettings(t *testing.T) {
	requireLib(t)
	c, err := Open(DefaultLibPath(), t.TempDir(), "--mark_cache_size=123456789", "--max_server_memory_usage=987654321")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	const q = "SELECT name, value FROM system.server_settings WHERE name IN ('mark_cache_size', 'max_server_memory_usage') ORDER BY name"
	want := "mark_cache_size\t123456789\nmax_server_memory_usage\t987654321\n"
	if got := query(t, c, q, "TabSeparated", nil); got != want {
		t.Fatalf("server settings: got %q, want %q", got, want)
	}
	for range ReadSessions { // every read session fails once and is renewed
		if _, err := c.Query(t.Context(), "SELECT throwIf(1)", "TabSeparated", nil); err == nil {
			t.Fatal("throwIf(1) succeeded")
		}
	}
	if got := query(t, c, q, "TabSeparated", nil); got != want {
		t.Errorf("server settings after renewing the sessions: got %q, want %q", got, want)
	}
}

func TestCloseReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir)
	if _, err := Open(DefaultLibPath(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("second open while one is open: %v", err)
	}
	query(t, c, "CREATE TABLE kept (n UInt64) ENGINE = MergeTree ORDER BY n", "TabSeparated", nil)
	query(t, c, "INSERT INTO kept SELECT number FROM numbers(1000)", "TabSeparated", nil)
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := c.Query(t.Context(), "SELECT 1", "TabSeparated", nil); err == nil {
		t.Fatal("query on a closed conn succeeded")
	}

	c2 := openTest(t, dir)
	if got := query(t, c2, "SELECT count(), sum(n) FROM kept", "TabSeparated", nil); got != "1000\t499500\n" {
		t.Errorf("after reopen: got %q", got)
	}
}

func TestQueryStream(t *testing.T) {
	c := openTest(t, t.TempDir())
	const q = "SELECT number AS n, toString(number * {k:UInt64}) AS s FROM numbers(300000)"
	p := map[string]string{"k": "3"}
	whole, err := c.Query(t.Context(), q, "CSV", p)
	if err != nil {
		t.Fatal(err)
	}

	var streamed bytes.Buffer
	chunks := 0
	err = c.QueryStream(t.Context(), q, "CSV", p, func(chunk []byte) error {
		chunks++
		streamed.Write(chunk)
		// Other statements on the Conn neither wait for nor break the stream.
		if got := query(t, c, "SELECT 1", "TabSeparated", nil); got != "1\n" {
			t.Errorf("query during stream: %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if chunks < 2 {
		t.Errorf("want several chunks, got %d", chunks)
	}
	if !bytes.Equal(streamed.Bytes(), whole) {
		t.Errorf("streamed output (%d bytes) differs from Query output (%d bytes)", streamed.Len(), len(whole))
	}

	// Formats with a header repeat it in every chunk (documented on QueryStream).
	err = c.QueryStream(t.Context(), q, "CSVWithNames", p, func(chunk []byte) error {
		if !bytes.HasPrefix(chunk, []byte(`"n","s"`+"\n")) {
			t.Errorf("CSVWithNames chunk without header: %q", chunk[:min(len(chunk), 40)])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("stream CSVWithNames: %v", err)
	}

	stop := errors.New("stop")
	calls := 0
	err = c.QueryStream(t.Context(), q, "CSV", p, func([]byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn error: got %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithCancel(t.Context())
	err = c.QueryStream(ctx, q, "CSV", p, func([]byte) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("canceled ctx: got %v", err)
	}

	var engineErr *Error
	err = c.QueryStream(t.Context(), "SELECT {missing:String}", "CSV", nil, func([]byte) error { return nil })
	if !errors.As(err, &engineErr) {
		t.Errorf("bad stream: want *Error, got %v", err)
	}
	if got := query(t, c, "SELECT 2", "TabSeparated", nil); got != "2\n" {
		t.Errorf("after streams: got %q", got)
	}
}

// TestCloseDuringStream closes the Conn while a stream's fn is still using
// it: Close waits for the stream, and the fn's queries fail instead of
// deadlocking.
func TestCloseDuringStream(t *testing.T) {
	c := openTest(t, t.TempDir())
	started := make(chan struct{})
	done := make(chan error, 1)
	var queryErr error
	go func() {
		first := true
		done <- c.QueryStream(t.Context(), "SELECT number FROM numbers(10)", "CSV", nil, func([]byte) error {
			if !first {
				return nil
			}
			first = false
			close(started)
			deadline := time.Now().Add(10 * time.Second)
			for queryErr == nil && time.Now().Before(deadline) {
				_, queryErr = c.Query(t.Context(), "SELECT 1", "TabSeparated", nil)
			}
			return nil
		})
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("stream: %v", err)
	}
	if queryErr == nil {
		t.Error("query inside the stream kept working after Close")
	}
}

// TestConcurrentParamsIsolated runs parameterized Query and QueryStream
// calls at once and checks that every call sees its own values: the engine
// binds parameters per connection, so Conn must not let calls overlap.
func TestConcurrentParamsIsolated(t *testing.T) {
	c := openTest(t, t.TempDir())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 100 {
				v := fmt.Sprintf("org-%d-%d", g, i)
				out, err := c.Query(t.Context(), "SELECT {org:String}", "TabSeparated", map[string]string{"org": v})
				if err != nil || string(out) != v+"\n" {
					t.Errorf("query bound %q: got %q, %v", v, out, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			v := fmt.Sprintf("stream-%d", i)
			var got []byte
			err := c.QueryStream(t.Context(), "SELECT {org:String}", "TabSeparated", map[string]string{"org": v},
				func(chunk []byte) error { got = append(got, chunk...); return nil })
			if err != nil || string(got) != v+"\n" {
				t.Errorf("stream bound %q: got %q, %v", v, got, err)
				return
			}
		}
	})
	wg.Wait()
}

// TestGoPanicsSurviveEngine checks that with the engine running a Go
// nil-pointer dereference still panics (and can be recovered) instead of
// hanging the process in the engine's signal handler.
func TestGoPanicsSurviveEngine(t *testing.T) {
	requireLib(t)
	run := func(scenario string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+scenario, childDirEnv+"="+t.TempDir())
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("%s child hung: killed after 60 s; stderr:\n%s", scenario, errOut.String())
		}
		return out.String(), errOut.String(), err
	}

	stdout, stderr, err := run("recover")
	if err != nil || !strings.Contains(stdout, "recovered") {
		t.Errorf("recover child: err %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}

	stdout, stderr, err = run("crash")
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() == 0 {
		t.Errorf("crash child: want non-zero exit, got %v", err)
	}
	if !strings.Contains(stderr, "nil pointer dereference") {
		t.Errorf("crash child: stderr lacks the Go panic:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

var nilPointer *int

// runChild opens the engine, runs a query, then dereferences a nil pointer,
// recovering it or not depending on scenario. It returns the exit code.
func runChild(scenario, dir string) int {
	c, err := Open(DefaultLibPath(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 3
	}
	defer c.Close()
	if _, err := c.Query(context.Background(), "SELECT 1", "TabSeparated", nil); err != nil {
		fmt.Fprintln(os.Stderr, "query:", err)
		return 3
	}
	switch scenario {
	case "recover":
		func() {
			defer func() {
				if r := recover(); r != nil {
					fmt.Println("recovered:", r)
				}
			}()
			fmt.Println(*nilPointer)
		}()
		// The engine still works after the panic.
		if _, err := c.Query(context.Background(), "SELECT 2", "TabSeparated", nil); err != nil {
			fmt.Fprintln(os.Stderr, "query after panic:", err)
			return 3
		}
		return 0
	case "crash":
		fmt.Println(*nilPointer)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown scenario", scenario)
	return 3
}

// running counts the statements containing marker that the engine is running now, read through a
// stream (a connection of its own, so the count is not held up by the statements it counts).
func running(t *testing.T, c *Conn, marker string) int {
	t.Helper()
	var out []byte
	err := c.QueryStream(t.Context(), "SELECT count() FROM system.processes WHERE query LIKE {m:String} AND query NOT LIKE '%system.processes%'",
		"TabSeparated", map[string]string{"m": "%" + marker + "%"}, func(chunk []byte) error { out = append(out, chunk...); return nil })
	if err != nil {
		t.Fatalf("count running statements: %v", err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// TestSessionsRunConcurrently: Query spreads statements over several engine sessions, which the
// engine runs at the same time, so one slow read does not hold up the others.
func TestSessionsRunConcurrently(t *testing.T) {
	c := openTest(t, t.TempDir())
	const n = 3
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := c.Query(t.Context(), "SELECT sleep(2) /* concurrent-marker */", "TabSeparated", nil); err != nil {
				t.Errorf("slow query: %v", err)
			}
		})
	}
	most := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && most < n; {
		most = max(most, running(t, c, "concurrent-marker"))
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	if most < n {
		t.Errorf("at most %d of %d slow queries ran at once: statements are serialised", most, n)
	}
}

// TestPriorityNotBehindReads: with every read session busy, QueryPriority still runs at once,
// and a Query waiting for a session gives up with its context.
func TestPriorityNotBehindReads(t *testing.T) {
	c := openTest(t, t.TempDir())
	var slowDone atomic.Int32
	var wg sync.WaitGroup
	for range ReadSessions {
		wg.Go(func() {
			if _, err := c.Query(t.Context(), "SELECT sleep(3) /* busy-marker */", "TabSeparated", nil); err != nil {
				t.Errorf("slow query: %v", err)
			}
			slowDone.Add(1)
		})
	}
	defer wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for running(t, c, "busy-marker") < ReadSessions {
		if time.Now().After(deadline) {
			t.Fatal("the slow queries never all ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := c.QueryPriority(t.Context(), "SELECT {v:String}", "TabSeparated", map[string]string{"v": "first"})
	if err != nil || string(out) != "first\n" {
		t.Fatalf("priority query: %q, %v", out, err)
	}
	if n := slowDone.Load(); n != 0 {
		t.Errorf("the priority query waited for %d slow reads", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Query(ctx, "SELECT 1", "TabSeparated", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a query with every read session busy: want DeadlineExceeded, got %v", err)
	}
}

// TestSessionIsCleanAfterAnError: a statement stopped by a limit after it produced rows leaves
// them in its engine session, which would hand them to the session's next statement; every
// statement after it returns exactly its own output, on every session.
func TestSessionIsCleanAfterAnError(t *testing.T) {
	c := openTest(t, t.TempDir())
	const slow = "SELECT sleepEachRow(0.01) FROM numbers(1000) SETTINGS max_block_size = 1, max_execution_time = 0.3"
	for name, q := range map[string]func(context.Context, string, string, map[string]string) ([]byte, error){
		"read": c.Query, "priority": c.QueryPriority,
	} {
		if _, err := q(t.Context(), slow, "TabSeparated", nil); err == nil || !strings.Contains(err.Error(), "TIMEOUT_EXCEEDED") {
			t.Fatalf("%s: want a timeout, got %v", name, err)
		}
		for i := range 2 * ReadSessions {
			out, err := q(t.Context(), "SELECT 42 + {i:UInt8}", "TabSeparated", map[string]string{"i": "1"})
			if err != nil || string(out) != "43\n" {
				t.Fatalf("%s: statement %d after the timeout: %q, %v", name, i, out, err)
			}
		}
	}
}
