// Command schemas lists an action's schema versions and retires one, for a deployment of separate
// services (the single process serves the same through its routes). It talks to NATS
// (LOGBOOK_NATS_URL, ...) where the registry lives; every gateway and validator replica sees a
// retirement within moments through its watch.
//
//	schemas list   [-org ORG] ACTION
//	schemas retire [-org ORG] -reason WHY [-by WHO] ACTION VERSION
//
// A retired version stays listed and no longer applies to new events: an event naming it is
// validated against the newest earlier version in force, or none (docs/design.md, Schemas).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/ingest/gateway"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/pkg/selfaudit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := config.FromEnv()
	log := env.Logger().With("command", "schemas")
	nc, js, err := natsx.ConnectFromEnv(ctx, env, "logbook-schemas")
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemas:", err)
		os.Exit(2)
	}
	defer natsx.DrainAndWait(nc, 10*time.Second)
	if err := run(ctx, js, log, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "schemas:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

const usage = `usage:
  schemas list   [-org ORG] ACTION
  schemas retire [-org ORG] -reason WHY [-by WHO] ACTION VERSION`

// run carries out one command against the registry in js and prints JSON to out.
func run(ctx context.Context, js jetstream.JetStream, log *slog.Logger, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError(usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	org := fs.String("org", "", "the organization whose own schema it is (default: the environment's)")
	reason := fs.String("reason", "", "why the version is retired (recorded)")
	by := fs.String("by", defaultActor(), "who retires it (recorded)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err.Error() + "\n" + usage)
	}
	rest := fs.Args()
	reg, err := schema.NewRegistry(ctx, js, log)
	if err != nil {
		return err
	}
	defer reg.Close()
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	switch {
	case args[0] == "list" && len(rest) == 1:
		versions := reg.Versions(*org, rest[0])
		if len(versions) == 0 {
			return fmt.Errorf("action %q has no schema versions", rest[0])
		}
		list := make([]map[string]any, len(versions))
		for i := range versions {
			list[i] = gateway.SchemaJSON(&versions[i])
		}
		return enc.Encode(list)
	case args[0] == "retire" && len(rest) == 2:
		version, err := strconv.Atoi(rest[1])
		if err != nil || version < 1 {
			return usageError("VERSION must be a positive integer\n" + usage)
		}
		if *reason == "" {
			return usageError("-reason is required: it is recorded with the retirement\n" + usage)
		}
		if version > len(reg.Versions(*org, rest[0])) {
			return fmt.Errorf("%w: action %q has no schema version %d", schema.ErrUnknownVersion, rest[0], version)
		}
		// On record in org_logbook before it changes, like the route (pkg/selfaudit).
		name, host := operator()
		audit := selfaudit.New(js, log)
		if err := audit.Record(selfaudit.Operator(ctx, name, host), gateway.SchemaRetiredEntry(*org, rest[0], version, *reason)); err != nil {
			return err
		}
		s, changed, err := reg.Retire(ctx, *org, rest[0], version, *by, *reason)
		if err != nil {
			return err
		}
		if !changed {
			fmt.Fprintf(os.Stderr, "schemas: %s version %d was already retired; nothing changed\n", rest[0], version)
		}
		return enc.Encode(gateway.SchemaJSON(s))
	}
	return usageError(usage)
}

// defaultActor names the operator running the command: user@host.
func defaultActor() string {
	name, host := operator()
	return name + "@" + host + " (schemas command)"
}

func operator() (name, host string) {
	name = "operator"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ = os.Hostname()
	return name, host
}
