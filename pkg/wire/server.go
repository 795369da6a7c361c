package wire

import (
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/config"
)

// HTTPConfig holds the timeouts of Logbook's HTTP servers (the single process's listener and the
// ingest and query API services). A response that streams a large body (an export download)
// replaces the whole-response write deadline with one per write (Streaming), so WriteTimeout
// never cuts a download that is making progress.
type HTTPConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a 5 MB bulk body over a slow
	// link (LOGBOOK_HTTP_READ_TIMEOUT). Default 60 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response, from the end of its request's headers until written
	// (LOGBOOK_HTTP_WRITE_TIMEOUT): above the longest search (30 s, LOGBOOK_SEARCH_MAX_EXECUTION_TIME)
	// and a bulk request's wait for its events to be stored. Default 90 s. For a streamed body,
	// the time one write may take.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no request for this long
	// (LOGBOOK_HTTP_IDLE_TIMEOUT). Default 120 s.
	IdleTimeout time.Duration
}

// DefaultHTTP returns the defaults documented on HTTPConfig.
func DefaultHTTP() HTTPConfig {
	return HTTPConfig{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		WriteTimeout: 90 * time.Second, IdleTimeout: 120 * time.Second}
}

// HTTPFromEnv reads LOGBOOK_HTTP_READ_TIMEOUT, LOGBOOK_HTTP_WRITE_TIMEOUT and
// LOGBOOK_HTTP_IDLE_TIMEOUT over DefaultHTTP.
func HTTPFromEnv(env *config.Env) HTTPConfig {
	c := DefaultHTTP()
	c.ReadTimeout = env.Duration("LOGBOOK_HTTP_READ_TIMEOUT", c.ReadTimeout)
	c.WriteTimeout = env.Duration("LOGBOOK_HTTP_WRITE_TIMEOUT", c.WriteTimeout)
	c.IdleTimeout = env.Duration("LOGBOOK_HTTP_IDLE_TIMEOUT", c.IdleTimeout)
	return c
}

// NewHTTPServer returns an http.Server for h with c's timeouts and request headers of at most
// 64 KiB.
func NewHTTPServer(h http.Handler, c HTTPConfig) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}

// Streaming prepares c's response to stream a body of any size: it returns a writer that
// replaces the server's whole-response write deadline with one per write, per from the write's
// start. So a download that keeps making progress is never cut, and one whose client stopped
// reading ends.
func Streaming(c echo.Context, per time.Duration) io.Writer {
	return &deadlineWriter{w: c.Response(), rc: http.NewResponseController(c.Response()), per: per}
}

type deadlineWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	per time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.per))
	return d.w.Write(p)
}
