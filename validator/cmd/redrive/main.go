// Command redrive puts chosen rejected events back through validation, exactly once, for a
// deployment of separate services (LOGBOOK_NATS_URL). It prints the report as JSON and exits 1 when
// some event could not be redriven. For the single process, ask the running instance instead:
// POST /admin/rejected/redrive.
//
//	redrive [-org ORG] [-since 24h|RFC3339] [-until …] [-reason TEXT] [-category CATEGORY]
//	        [-schema pinned|current] [-limit N] [-dry-run]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/validator/redrive"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, config.FromEnv(), os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redrive:", err)
	}
	os.Exit(code)
}

// run redrives as args say and writes the report to out. The exit code is 0 when every matched
// event was redriven or had been, 1 when some failed, 2 on a usage or connection error.
func run(ctx context.Context, env *config.Env, args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("redrive", flag.ContinueOnError)
	org := fs.String("org", "", "only this organization's rejected events")
	since := fs.String("since", "", "only events rejected since this time (RFC 3339) or this long ago (24h)")
	until := fs.String("until", "", "only events rejected until this time (RFC 3339) or this long ago")
	reason := fs.String("reason", "", "only events whose reject reason contains this text (case-insensitive)")
	category := fs.String("category", "", "only events of this reject category (schema_violation, delivery_limit, …)")
	schema := fs.String("schema", "", "validate against the pinned or the current schema (default: current for schema violations and unknown versions, else pinned)")
	limit := fs.Int("limit", 0, fmt.Sprintf("handle at most this many rejected messages (default %d)", redrive.DefaultLimit))
	dryRun := fs.Bool("dry-run", false, "list what would be redriven; change nothing")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	body, _ := json.Marshal(map[string]any{"organization_id": *org, "since": *since, "until": *until, "reason": *reason,
		"category": *category, "schema": *schema, "dry_run": *dryRun, "limit": *limit})
	req, field, err := redrive.ParseRequest(body, time.Now())
	if err == nil {
		field, err = req.Validate()
	}
	if err != nil {
		return 2, fmt.Errorf("-%s: %w", flagName(field), err)
	}
	log := env.Logger().With("service", "redrive")
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-redrive")
	if err != nil {
		return 2, err
	}
	defer natsx.DrainAndWait(nc, 10*time.Second)
	r, err := redrive.New(ctx, js, log)
	if err != nil {
		return 2, err
	}
	r.UseAudit(selfaudit.New(js, log)) // recorded in org_logbook before anything is redriven
	user, host := operator()
	rep, err := r.Run(selfaudit.Operator(ctx, user, host), req, "redrive command, "+user+"@"+host)
	if err != nil {
		return 2, err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return 2, err
	}
	if rep.Failed > 0 {
		return 1, fmt.Errorf("%d rejected events could not be redriven (see the report)", rep.Failed)
	}
	return 0, nil
}

func flagName(field string) string {
	switch field {
	case "organization_id":
		return "org"
	case "dry_run":
		return "dry-run"
	}
	return field
}

// operator names who ran the command and where, for the redrive's audit record.
func operator() (name, host string) {
	host, _ = os.Hostname()
	name = "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return name, host
}
