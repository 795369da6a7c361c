package redrive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/wire"
)

// MaxBodyBytes caps a redrive request body.
const MaxBodyBytes = 16 << 10

// Register adds POST /admin/rejected/redrive to g (which applies authentication). The body is
// a JSON object with the fields of Request; since and until also take a Go duration back from now
// ("24h"). The answer is the Report.
func (r *Redriver) Register(g *echo.Group) {
	g.POST("/admin/rejected/redrive", r.serve, wire.Need(apikey.ScopeAdmin))
}

func (r *Redriver) serve(c echo.Context) error {
	body, err := wire.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	req, field, err := ParseRequest(body, time.Now())
	if err == nil {
		field, err = req.Validate()
	}
	if err != nil {
		return wire.BadRequest("invalid_request", err.Error(), []map[string]string{{"field": field, "code": err.Error()}})
	}
	rep, err := r.Run(c.Request().Context(), req, c.RealIP())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

// ParseRequest decodes a redrive request body (empty: every rejected event). since and until are
// RFC 3339 times or Go durations back from now. field names the offending field on error.
func ParseRequest(body []byte, now time.Time) (req Request, field string, err error) {
	var in struct {
		Organization string `json:"organization_id"`
		Since        string `json:"since"`
		Until        string `json:"until"`
		Reason       string `json:"reason"`
		Category     string `json:"category"`
		Schema       string `json:"schema"`
		DryRun       bool   `json:"dry_run"`
		Limit        int    `json:"limit"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			return req, "body", errors.New("the body must be a JSON object with organization_id, since, until, reason, category, schema, dry_run and limit")
		}
	}
	req = Request{Organization: in.Organization, Reason: in.Reason, Category: in.Category, Schema: in.Schema, DryRun: in.DryRun, Limit: in.Limit}
	if req.Since, err = ParseTime(in.Since, now); err != nil {
		return req, "since", fmt.Errorf("since %w", err)
	}
	if req.Until, err = ParseTime(in.Until, now); err != nil {
		return req, "until", fmt.Errorf("until %w", err)
	}
	return req, "", nil
}

// ParseTime reads an RFC 3339 time or a Go duration back from now ("2h"); "" is the zero time.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New("must be an RFC 3339 time or a duration such as 24h")
	}
	return t, nil
}
