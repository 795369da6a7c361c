//go:build !nochdb

// Package chdb runs the ClickHouse engine in-process by loading libchdb.so
// with purego (no cgo).
//
// The library is large (about 566 MB) and is not part of the repository:
// `make libchdb` fetches it into the path returned by DefaultLibPath.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

var errClosed = errors.New("chdb: connection is closed")

// library holds the functions bound from libchdb.so and libc.
type library struct {
	path string

	connect         func(argc int32, argv []*byte) *uintptr
	closeConn       func(conn *uintptr)
	queryWithParams func(conn uintptr, query []byte, queryLen uintptr, format []byte, formatLen uintptr,
		names []*byte, nameLens []uintptr, values []*byte, valueLens []uintptr, count uintptr) uintptr
	streamWithParams func(conn uintptr, query []byte, queryLen uintptr, format []byte, formatLen uintptr,
		names []*byte, nameLens []uintptr, values []*byte, valueLens []uintptr, count uintptr) uintptr
	streamFetch       func(conn, stream uintptr) uintptr
	streamCancel      func(conn, stream uintptr)
	resultBuffer      func(res uintptr) *byte
	resultLength      func(res uintptr) uintptr
	resultError       func(res uintptr) *byte
	destroyResult     func(res uintptr)
	setSignalHandlers func(enabled int32)

	sigaction func(sig int32, act, oldact *byte) int32
}

var (
	mu     sync.Mutex // guards lib and opened
	lib    *library
	opened bool
)

// Open loads libchdb.so from libPath and opens the engine on dataDir
// (created if missing), as if it were started with
// {"clickhouse", "--path=<dataDir>"}, with PrioritySessions sessions for
// QueryPriority and ReadSessions sessions for Query.
//
// The library is loaded once per process; later calls reuse it and must name
// the same path. When the file is missing, the error names the path and says
// that `make libchdb` fetches it.
//
// Left alone, the engine replaces the Go runtime's handlers for SIGSEGV,
// SIGBUS, SIGILL, SIGFPE and SIGABRT when it boots, which turns a Go
// nil-pointer dereference into a hang. Open turns the engine's handlers off
// and puts the Go runtime's back after every call that may touch them, so Go
// panics keep working.
//
// The engine supports one open Conn per process: a second Open while one is
// open returns an error. After Close, Open may be called again in the same
// process, on the same or another dataDir (the data is there again): Close
// shuts the engine down and Open boots it anew. That works on Linux but is
// meant for tests; the engine's authors warn that many shutdown/boot cycles
// in one process have corrupted the allocator on macOS, so a server opens
// once and closes at exit.
//
// args are passed to the engine after those two, e.g. server settings as
// "--mark_cache_size=268435456" (read back in system.server_settings); every connection of the
// Conn is opened with the same arguments.
func Open(libPath, dataDir string, args ...string) (*Conn, error) {
	mu.Lock()
	defer mu.Unlock()
	if opened {
		return nil, errors.New("chdb: a connection is already open in this process (the engine supports one)")
	}
	l, err := load(libPath)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("chdb: data dir %s: %w", dataDir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("chdb: create data dir: %w", err)
	}

	c := &Conn{lib: l, dir: dir, args: args, priority: make(chan *session, PrioritySessions), readers: make(chan *session, ReadSessions)}
	for i := 0; i < PrioritySessions+ReadSessions; i++ {
		handle, err := l.openConn(dir, args)
		if err != nil {
			c.closeSessions()
			return nil, err
		}
		s := &session{handle: handle, conn: *handle}
		c.sessions = append(c.sessions, s)
		if i < PrioritySessions {
			c.priority <- s
		} else {
			c.readers <- s
		}
	}
	opened = true
	return c, nil
}

// openConn connects to the engine on dir, booting it if no connection is
// open. Connecting may install the engine's signal handlers again, so the Go
// runtime's are saved before and put back after.
func (l *library) openConn(dir string, args []string) (*uintptr, error) {
	argv := [][]byte{cString("clickhouse"), cString("--path=" + dir)}
	for _, a := range args {
		argv = append(argv, cString(a))
	}
	ptrs := make([]*byte, 0, len(argv)+1)
	for _, a := range argv {
		ptrs = append(ptrs, &a[0])
	}
	ptrs = append(ptrs, nil)
	saved, err := l.saveSignals()
	if err != nil {
		return nil, err
	}
	handle := l.connect(int32(len(argv)), ptrs)
	runtime.KeepAlive(argv)
	if err := l.restoreSignals(saved); err != nil {
		return nil, err
	}
	if handle == nil || *handle == 0 {
		return nil, fmt.Errorf("chdb: cannot open the engine on %s", dir)
	}
	return handle, nil
}

// load dlopens the library and libc once per process, binds the functions and
// disables the engine's signal handlers. Called with mu held.
func load(path string) (*library, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("chdb: library %s not found (`make libchdb` fetches it): %w", path, err)
		}
		return nil, fmt.Errorf("chdb: library %s: %w", path, err)
	}
	if lib != nil {
		if lib.path != path {
			return nil, fmt.Errorf("chdb: library already loaded from %s, cannot load %s too", lib.path, path)
		}
		return lib, nil
	}

	libc, err := purego.Dlopen("libc.so.6", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("chdb: load libc: %w", err)
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("chdb: load %s: %w", path, err)
	}
	l := &library{path: path}
	binds := []struct {
		handle uintptr
		name   string
		fn     any
	}{
		{libc, "sigaction", &l.sigaction},
		{h, "chdb_connect", &l.connect},
		{h, "chdb_close_conn", &l.closeConn},
		{h, "chdb_query_with_params_n", &l.queryWithParams},
		{h, "chdb_stream_query_with_params_n", &l.streamWithParams},
		{h, "chdb_stream_fetch_result", &l.streamFetch},
		{h, "chdb_stream_cancel_query", &l.streamCancel},
		{h, "chdb_result_buffer", &l.resultBuffer},
		{h, "chdb_result_length", &l.resultLength},
		{h, "chdb_result_error", &l.resultError},
		{h, "chdb_destroy_query_result", &l.destroyResult},
		{h, "chdb_set_signal_handlers_enabled", &l.setSignalHandlers},
	}
	for _, b := range binds {
		sym, err := purego.Dlsym(b.handle, b.name)
		if err != nil {
			return nil, fmt.Errorf("chdb: %s lacks %s: %w", path, b.name, err)
		}
		purego.RegisterFunc(b.fn, sym)
	}

	// Turning the engine's handlers off has been measured to reset the
	// signals it covers (not with this build, but cheap to guard), so the Go
	// runtime's handlers are saved first and put back after.
	saved, err := l.saveSignals()
	if err != nil {
		return nil, err
	}
	l.setSignalHandlers(0)
	if err := l.restoreSignals(saved); err != nil {
		return nil, err
	}
	lib = l
	return l, nil
}

// fixedSignals are the signals whose Go handlers the engine replaces or
// resets: the synchronous faults Go turns into panics, and SIGURG, which the
// Go scheduler uses for preemption.
var fixedSignals = [...]syscall.Signal{
	syscall.SIGILL, syscall.SIGABRT, syscall.SIGFPE, syscall.SIGBUS, syscall.SIGSEGV, syscall.SIGURG,
}

// savedSignals holds one opaque libc struct sigaction per fixed signal
// (glibc's is 152 bytes on x86-64; 256 leaves room).
type savedSignals [len(fixedSignals)][256]byte

func (l *library) saveSignals() (*savedSignals, error) {
	s := new(savedSignals)
	for i, sig := range fixedSignals {
		if l.sigaction(int32(sig), nil, &s[i][0]) != 0 {
			return nil, fmt.Errorf("chdb: save handler of %v failed", sig)
		}
	}
	return s, nil
}

func (l *library) restoreSignals(s *savedSignals) error {
	for i, sig := range fixedSignals {
		if l.sigaction(int32(sig), &s[i][0], nil) != 0 {
			return fmt.Errorf("chdb: restore handler of %v failed", sig)
		}
	}
	runtime.KeepAlive(s)
	return nil
}

// Conn is the in-process engine, opened on a data directory. It holds
// several engine sessions: PrioritySessions reserved for QueryPriority and
// ReadSessions shared by Query. Sessions run statements concurrently (measured on 26.7: a
// SELECT 1 on one session answered in about 25 ms while another session ran
// a 2 s statement), and each binds query parameters for itself, so a slow
// read never holds up a statement on another session. Within a session,
// statements run one at a time: the engine binds parameters on the session,
// and overlapping calls on one session have been measured to see each
// other's values. Safe for concurrent use.
type Conn struct {
	lib *library

	dir  string
	args []string // the engine's arguments after --path (Open)

	mu       sync.RWMutex // read-held by calls, write-held by Close to mark it closed
	closed   bool
	priority chan *session // QueryPriority's idle sessions
	readers  chan *session // Query's idle sessions
	sessions []*session    // all of them, for Close
	streams  sync.WaitGroup
}

// session is one engine connection (a chdb_connection: its own engine
// session and settings).
type session struct {
	mu     sync.Mutex // one statement at a time (see Conn); guards the fields below
	handle *uintptr   // chdb_connection *
	conn   uintptr    // *handle
	dirty  bool       // a statement failed and the session could not be renewed yet
}

// Query runs a statement and returns its output in the given ClickHouse
// format (e.g. "JSONCompactEachRow", "CSVWithNames", "TabSeparated").
// Inline data after FORMAT works (INSERT INTO t FORMAT JSONEachRow {...}).
// Note that the engine also runs several ;-separated statements in one call.
//
// params are bound server-side for this call only: the statement refers to
// them as {name:Type} placeholders and values are given as strings (the
// placeholder does the typing). Nothing is interpolated into the SQL, and no
// value outlives the call: a placeholder left unbound is an error. params may
// be nil. The engine reads values in its escaped (TSV) style, so in a String
// value a backslash starts an escape (`a\tb` arrives as a, tab, b) and a raw
// tab or newline is rejected: escape a backslash as \\, a tab as \t and a
// newline as \n first.
//
// The statement runs on one of the ReadSessions read sessions; when all are
// busy, Query waits for one (or for ctx). Engine errors are returned as
// *Error. ctx is checked before the call; the engine call itself cannot be
// interrupted, so bound long statements with the max_execution_time setting.
func (c *Conn) Query(ctx context.Context, query, format string, params map[string]string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.on(ctx, c.readers, query, format, params)
}

// QueryPriority is Query on the sessions reserved for work that must not wait
// behind reads: the writer's INSERTs and readiness checks (two sessions, so
// neither of those waits for the other either).
func (c *Conn) QueryPriority(ctx context.Context, query, format string, params map[string]string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.on(ctx, c.priority, query, format, params)
}

// on runs the statement on a session taken from pool, waiting for one (or ctx).
func (c *Conn) on(ctx context.Context, pool chan *session, query, format string, params map[string]string) ([]byte, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, errClosed
	}
	var s *session
	select {
	case s = <-pool:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { pool <- s }()
	return c.run(s, query, format, params)
}

func (c *Conn) run(s *session, query, format string, params map[string]string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		if err := c.renew(s); err != nil {
			return nil, err
		}
	}
	call := newCall(query, format, params)
	res := c.lib.queryWithParams(s.conn, call.query, uintptr(len(query)), call.format, uintptr(len(format)),
		call.names, call.nameLens, call.values, call.valueLens, uintptr(len(call.names)))
	runtime.KeepAlive(call)
	if res == 0 {
		s.dirty = true
		return nil, errors.New("chdb: engine returned no result")
	}
	defer c.lib.destroyResult(res)
	out, err := c.lib.output(res)
	if err != nil {
		// A statement that fails after it produced rows (stopped by max_execution_time, say)
		// leaves them in the session: the engine hands them to the session's next statement,
		// ahead of its own output (measured on 26.7). Such a session is replaced.
		s.dirty = true
		if rerr := c.renew(s); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
	}
	return out, err
}

// renew replaces s's engine connection with a fresh one. Called with s.mu held.
func (c *Conn) renew(s *session) error {
	handle, err := c.lib.openConn(c.dir, c.args)
	if err != nil {
		return fmt.Errorf("chdb: renew a session after an error: %w", err)
	}
	c.lib.closeConn(s.handle)
	s.handle, s.conn, s.dirty = handle, *handle, false
	return nil
}

// QueryStream runs a statement like Query but hands its output to fn in
// chunks as the engine produces them (one per block of about 65k rows), for
// exports too large to hold in memory. fn owns each chunk. If fn returns an
// error or ctx is done between chunks, the query is cancelled and that error
// is returned.
//
// Each chunk is a complete output of the format for its rows: CSVWithNames
// and other *WithNames formats repeat their header in every chunk, and JSON
// or Parquet give one document per chunk. For one continuous file use a row
// format without header or footer (CSV, TabSeparated, JSONEachRow,
// JSONCompactEachRow) and write any header yourself.
//
// Any statement on a connection cancels a stream running on it, so each
// stream runs on a connection of its own to the same engine: Query calls are
// not held up by a stream, and fn may use the Conn. Close waits for running
// streams, so fn must not call it. Streams may run concurrently.
func (c *Conn) QueryStream(ctx context.Context, query, format string, params map[string]string, fn func(chunk []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return errClosed
	}
	c.streams.Add(1)
	c.mu.RUnlock()
	defer c.streams.Done()
	l := c.lib
	handle, err := l.openConn(c.dir, c.args)
	if err != nil {
		return err
	}
	defer l.closeConn(handle)
	conn := *handle

	call := newCall(query, format, params)
	stream := l.streamWithParams(conn, call.query, uintptr(len(query)), call.format, uintptr(len(format)),
		call.names, call.nameLens, call.values, call.valueLens, uintptr(len(call.names)))
	runtime.KeepAlive(call)
	if stream == 0 {
		return errors.New("chdb: engine returned no stream")
	}
	defer l.destroyResult(stream)
	if msg := goString(l.resultError(stream)); msg != "" {
		return &Error{Message: strings.TrimSpace(msg)}
	}

	for {
		chunk := l.streamFetch(conn, stream)
		if chunk == 0 {
			return errors.New("chdb: engine returned no chunk")
		}
		out, err := l.output(chunk)
		l.destroyResult(chunk)
		if err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		if err := fn(out); err != nil {
			l.streamCancel(conn, stream)
			return err
		}
		if err := ctx.Err(); err != nil {
			l.streamCancel(conn, stream)
			return err
		}
	}
}

// Close closes the sessions after running statements and streams end (the
// last one closed shuts the engine down); later calls fail. It is
// idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	was := c.closed
	c.closed = true
	c.mu.Unlock()
	if was {
		return nil
	}
	c.streams.Wait()
	c.closeSessions()
	mu.Lock()
	opened = false
	mu.Unlock()
	return nil
}

// closeSessions closes every session opened so far.
func (c *Conn) closeSessions() {
	for i := len(c.sessions) - 1; i >= 0; i-- {
		c.lib.closeConn(c.sessions[i].handle)
	}
	c.sessions = nil
}

// output copies a result's buffer into Go memory, or returns its error.
func (l *library) output(res uintptr) ([]byte, error) {
	if msg := goString(l.resultError(res)); msg != "" {
		return nil, &Error{Message: strings.TrimSpace(msg)}
	}
	n := l.resultLength(res)
	if n == 0 {
		return []byte{}, nil
	}
	out := make([]byte, n)
	copy(out, unsafe.Slice(l.resultBuffer(res), n))
	return out, nil
}

// call holds the C-side arguments of one statement; it must stay reachable
// until the engine call returns.
type call struct {
	query, format       []byte
	names, values       []*byte
	nameLens, valueLens []uintptr
}

func newCall(query, format string, params map[string]string) *call {
	c := &call{query: cString(query), format: cString(format)}
	for name, value := range params {
		n, v := cString(name), cString(value)
		c.names = append(c.names, &n[0])
		c.nameLens = append(c.nameLens, uintptr(len(name)))
		c.values = append(c.values, &v[0])
		c.valueLens = append(c.valueLens, uintptr(len(value)))
	}
	return c
}

// cString returns s as a NUL-terminated byte slice.
func cString(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

// goString copies a NUL-terminated C string; nil gives "".
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
