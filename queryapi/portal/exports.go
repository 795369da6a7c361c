package portal

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/wire"
)

// exportProxy runs exports for viewers through the export API's own routes (POST
// /audit_logs/exports, GET /audit_logs/exports/{id}), registered on a private echo instance that
// only the portal reaches: the organization comes from the viewer's token, never from the page.
type exportProxy struct {
	inner *echo.Echo
}

func newExportProxy(exports routes, log *slog.Logger) *exportProxy {
	inner := echo.New()
	inner.HTTPErrorHandler = wire.ErrorHandler(log)
	exports.Register(inner.Group(""))
	return &exportProxy{inner: inner}
}

// call runs one request against the export API and returns its status and body.
func (x *exportProxy) call(c echo.Context, method, path string, body []byte) (int, []byte) {
	from := c.Request()
	req, _ := http.NewRequestWithContext(from.Context(), method, path, bytes.NewReader(body))
	req.Host, req.TLS = from.Host, from.TLS // the download link is built from them
	for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host", echo.HeaderXRequestID} {
		if v := from.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	x.inner.ServeHTTP(rec, req)
	return rec.status, rec.body.Bytes()
}

// recorder is an in-memory http.ResponseWriter for the export API's small JSON answers.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// exportRequest is what the page sends: the page's filters, which the export API takes too,
// without organization.
type exportRequest struct {
	RangeStart string   `json:"range_start,omitempty"`
	RangeEnd   string   `json:"range_end,omitempty"`
	Actions    []string `json:"actions,omitempty"`
	ActorNames []string `json:"actor_names,omitempty"`
	ActorIDs   []string `json:"actor_ids,omitempty"`
	ActorTypes []string `json:"actor_types,omitempty"`
	Targets    []string `json:"targets,omitempty"`
	TargetIDs  []string `json:"target_ids,omitempty"`
	Q          string   `json:"q,omitempty"`
}

// exportJSON is the export API's answer plus the handle that lets this viewer poll it.
type exportJSON struct {
	ID     string  `json:"id"`
	State  string  `json:"state"`
	URL    *string `json:"url,omitempty"`
	Handle string  `json:"handle"`
}

func (p *Portal) noExports() error {
	return &wire.Error{Status: http.StatusNotImplemented, Code: "exports_unavailable",
		Message: "Exports are not available on this server."}
}

// createExport starts an export of the viewer's organization: POST /portal/api/exports.
func (p *Portal) createExport(c echo.Context) error {
	if p.exports == nil {
		return p.noExports()
	}
	body, err := wire.ReadBody(c, 64<<10)
	if err != nil {
		return err
	}
	var req exportRequest
	if err := strictJSON(body, &req); err != nil {
		return wire.BadRequest("invalid_request_body", "The body must hold only export filters.", nil)
	}
	org := c.Get(viewerContext).(string)
	// The export API needs a range; an open end of the page's range means "everything".
	if req.RangeStart == "" {
		req.RangeStart = "1970-01-01T00:00:00.000Z"
	}
	if req.RangeEnd == "" {
		req.RangeEnd = event.FormatTime(time.Now().Add(25 * time.Hour))
	}
	out, _ := json.Marshal(struct {
		OrganizationID string `json:"organization_id"`
		exportRequest
	}{org, req})
	status, res := p.exports.call(c, http.MethodPost, "/audit_logs/exports", out)
	return p.relayExport(c, org, status, res)
}

// getExport reports an export this viewer's organization started: GET /portal/api/exports/{id}?handle=…
func (p *Portal) getExport(c echo.Context) error {
	if p.exports == nil {
		return p.noExports()
	}
	org := c.Get(viewerContext).(string)
	id := c.Param("id")
	if !p.links.checkHandle(c.QueryParam("handle"), org, id) {
		return wire.NotFound("Audit Log Export not found.")
	}
	status, res := p.exports.call(c, http.MethodGet, "/audit_logs/exports/"+url.PathEscape(id), nil)
	return p.relayExport(c, org, status, res)
}

func (p *Portal) relayExport(c echo.Context, org string, status int, res []byte) error {
	if status >= 300 {
		return c.JSONBlob(status, res)
	}
	var x exportJSON
	if err := json.Unmarshal(res, &x); err != nil || x.ID == "" {
		p.log.Error("unexpected answer from the export API", "status", status, "err", err)
		return wire.Unavailable("Exports are unavailable right now; retry shortly.", 1)
	}
	x.Handle = p.links.handle(org, x.ID)
	return c.JSON(status, x)
}

// strictJSON decodes one JSON object into v, refusing unknown fields and trailing data.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailing
	}
	return nil
}

var errTrailing = errors.New("trailing data after the JSON object")
