package wire_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/wire"
)

// serve runs e under NewHTTPServer(e, c) on a loopback port until the test ends.
func serve(t *testing.T, e *echo.Echo, c wire.HTTPConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := wire.NewHTTPServer(e, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// A streamed body outlives the server's read and write timeouts as long as every write makes
// progress; the same body written plainly is cut at the write timeout.
func TestStreamingOutlivesTheWriteTimeout(t *testing.T) {
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	body := func(w io.Writer, c echo.Context) error {
		c.Response().WriteHeader(http.StatusOK)
		for i := range 15 { // 1.5 s, three times the timeouts
			if c.Request().Context().Err() != nil {
				return nil
			}
			if _, err := fmt.Fprintf(w, "chunk %02d\n", i); err != nil {
				return nil
			}
			c.Response().Flush()
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	e.GET("/stream", func(c echo.Context) error { return body(wire.Streaming(c, time.Second), c) })
	e.GET("/plain", func(c echo.Context) error { return body(c.Response(), c) })
	addr := serve(t, e, wire.HTTPConfig{ReadHeaderTimeout: time.Second, ReadTimeout: 500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond, IdleTimeout: time.Second})

	get := func(path string) string {
		res, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body) // a cut body ends with an error: what arrived counts
		return string(b)
	}
	assert.Equal(t, 15, strings.Count(get("/stream"), "chunk"), "every chunk of the stream")
	assert.Less(t, strings.Count(get("/plain"), "chunk"), 15, "the write timeout is real")
}

// A request whose body trickles in is cut at the read timeout, and an idle kept-alive connection
// is closed at the idle timeout.
func TestSlowBodiesAndIdleConnectionsAreCut(t *testing.T) {
	e := wire.NewServer(slog.New(slog.DiscardHandler))
	e.POST("/x", func(c echo.Context) error {
		_, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.JSON(200, map[string]bool{"ok": true})
	})
	addr := serve(t, e, wire.HTTPConfig{ReadHeaderTimeout: time.Second, ReadTimeout: 500 * time.Millisecond,
		WriteTimeout: time.Second, IdleTimeout: 500 * time.Millisecond})

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { // one byte every 100 ms: the body would take 10 s
		for ctx.Err() == nil {
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	began := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.ReadAll(conn) // whatever the server answers, it then closes the connection
	assert.Less(t, time.Since(began), 3*time.Second, "the trickled body was cut")

	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer idle.Close()
	_, err = fmt.Fprintf(idle, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	require.NoError(t, err)
	r := bufio.NewReader(idle)
	res, err := http.ReadResponse(r, nil)
	require.NoError(t, err)
	_, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	began = time.Now()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = r.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the server closed the idle connection")
	assert.Less(t, time.Since(began), 3*time.Second)
}
