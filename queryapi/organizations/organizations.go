// Package organizations serves an organization's audit-log settings: its retention
// (GET|PUT /organizations/{id}/audit_logs_retention, both body forms the WorkOS SDKs send) and its
// audit-log configuration (GET /organizations/{id}/audit_log_configuration). Organizations exist
// implicitly: any well-formed id names one, with no retention until one is set.
package organizations

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/retention"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/pkg/wire"
)

// MaxBodyBytes caps a retention request body.
const MaxBodyBytes = 4 << 10

// settings is the retention bucket: a *retention.Policies.
type settings interface {
	Get(ctx context.Context, org string) (days int, set bool, err error)
	Set(ctx context.Context, org string, days int) error
	All() map[string]uint16
}

// deleter removes an organization's events older than a number of days: a *store.Store.
type deleter interface {
	DeleteOlderThan(ctx context.Context, org string, days uint16) error
}

// auditor records administrative changes before they are made: a *selfaudit.Recorder. Its error
// is the answer to give (a 503).
type auditor interface {
	Record(ctx context.Context, e selfaudit.Entry) error
}

// API serves the organization routes. Safe for concurrent use.
type API struct {
	settings settings
	store    deleter
	audit    auditor
	log      *slog.Logger
}

// New returns an API on the retention settings s, deleting expired events from st.
func New(s settings, st deleter, log *slog.Logger) *API {
	return &API{settings: s, store: st, audit: selfaudit.Discard, log: log}
}

// UseAudit makes every retention change recorded in the self-audit organization before it is
// made. Without it, nothing is recorded (selfaudit.Discard).
func (a *API) UseAudit(au auditor) { a.audit = au }

// Register adds the routes to g (which applies authentication), each with its scope.
func (a *API) Register(g *echo.Group) {
	read, write := wire.Need(apikey.ScopeRetentionRead), wire.Need(apikey.ScopeRetentionWrite)
	g.GET("/organizations/:org/audit_logs_retention", a.getRetention, read)
	g.PUT("/organizations/:org/audit_logs_retention", a.putRetention, write)
	g.GET("/organizations/:org/audit_log_configuration", a.getConfiguration, read)
}

type retentionJSON struct {
	Days *int `json:"retention_period_in_days"`
}

func orgParam(c echo.Context) (string, error) {
	org, err := wire.PathParam(c, "org")
	if err != nil || !event.ValidOrgID(org) {
		return "", wire.NotFound("Organization not found.")
	}
	return org, wire.AllowOrg(c.Request().Context(), org)
}

func (a *API) current(c echo.Context) (string, *int, error) {
	org, err := orgParam(c)
	if err != nil {
		return "", nil, err
	}
	days, set, err := a.settings.Get(c.Request().Context(), org)
	if err != nil {
		return "", nil, wire.Unavailable("Retention settings are unavailable; retry shortly.", 1)
	}
	if !set {
		return org, nil, nil
	}
	return org, &days, nil
}

func (a *API) getRetention(c echo.Context) error {
	_, days, err := a.current(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, retentionJSON{Days: days})
}

func (a *API) getConfiguration(c echo.Context) error {
	org, days, err := a.current(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"organization_id":          org,
		"retention_period_in_days": days,
		"state":                    "active",
	})
}

// putRetention stores the setting, then deletes what it no longer keeps. The new setting governs
// reads at once (the query API filters by it); the DELETE makes it physical, and the sweeper retries
// it if it fails now.
func (a *API) putRetention(c echo.Context) error {
	org, err := orgParam(c)
	if err != nil {
		return err
	}
	body, err := wire.ReadBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	days, err := ParseRetention(body)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	entry := selfaudit.Entry{
		Action:   selfaudit.RetentionUpdated,
		Targets:  []event.Entity{{ID: org, Type: selfaudit.TargetOrganization}},
		Metadata: map[string]any{"retention_period_in_days": days},
	}
	if prev, set, err := a.settings.Get(ctx, org); err != nil {
		return wire.Unavailable("Retention settings are unavailable; retry shortly.", 1)
	} else if set {
		entry.Metadata["previous_retention_period_in_days"] = prev
	}
	// On record before it is made (pkg/selfaudit): no record, no change.
	if err := a.audit.Record(ctx, entry); err != nil {
		return err
	}
	if err := a.settings.Set(ctx, org, days); err != nil {
		return wire.Unavailable("Retention settings are unavailable; retry shortly.", 1)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.store.DeleteOlderThan(dctx, org, uint16(days)); err != nil {
		a.log.Warn("retention delete failed; the sweeper retries it", "org_id", org, "days", days, "err", err)
	}
	return c.JSON(http.StatusOK, retentionJSON{Days: &days})
}

// ParseRetention reads a PUT body: {"retention_period_in_days": n} (n from 1 to 3650; WorkOS
// documents 30 and 365) or {"retention_period": "1_MONTH"} (Node SDK 11; months are 30 days, years
// 365). Exactly one of the two; nothing else.
func ParseRetention(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || dec.More() || obj == nil {
		return 0, wire.BadRequest("invalid_request_body", "The body must be one JSON object.", nil)
	}
	var errs []map[string]string
	add := func(field, code string) { errs = append(errs, map[string]string{"field": field, "code": code}) }
	days := 0
	for k, v := range obj {
		switch k {
		case "retention_period_in_days":
			n, ok := v.(json.Number)
			i, err := n.Int64()
			if !ok || err != nil || i < 1 || i > retention.MaxDays {
				add(k, fmt.Sprintf("retention_period_in_days must be a whole number of days from 1 to %d", retention.MaxDays))
				continue
			}
			days = int(i)
		case "retention_period":
			s, _ := v.(string)
			d, ok := retention.PeriodDays(s)
			if !ok {
				add(k, "retention_period must be one of 1_MONTH … 11_MONTHS, 1_YEAR … 10_YEARS")
				continue
			}
			days = d
		default:
			add(k, k+" is not a known field")
		}
	}
	if len(obj) == 2 && len(errs) == 0 {
		add("retention_period", "give retention_period_in_days or retention_period, not both")
	}
	if len(obj) == 0 {
		add("retention_period_in_days", "retention_period_in_days or retention_period is required")
	}
	if len(errs) > 0 {
		return 0, wire.Unprocessable("invalid_retention_period", "Validation failed.", errs)
	}
	return days, nil
}

// Sweep deletes, every interval until ctx ends, each organization's events older than its current
// retention that the TTL will not drop in time (rows stamped with a longer retention, or none,
// before the setting was shortened). Running it in several replicas is harmless.
func Sweep(ctx context.Context, s settings, st deleter, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for org, days := range s.All() {
			if err := st.DeleteOlderThan(ctx, org, days); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("retention sweep failed", "org_id", org, "err", err)
			}
		}
	}
}
