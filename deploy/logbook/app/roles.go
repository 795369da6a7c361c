package app

import (
	"strings"

	"github.com/logbookhq/logbook/pkg/config"
)

// Roles are the parts of Logbook one process runs. The zero value runs none; AllRoles is the
// default. Writer and Query need the embedded ClickHouse engine, so a process with either is the
// one storage node of its NATS (one engine per data directory); Ingest and Validator are
// stateless and scale out as the separate `ingest` and `validator` services do.
type Roles struct {
	// Ingest serves POST /audit_logs/events (single and bulk) and the schema routes.
	Ingest bool
	// Validator runs a validator worker on the raw stream.
	Validator bool
	// Writer runs a batch writer from the valid stream into the embedded engine.
	Writer bool
	// Query serves listing, exports (and runs them), retention, the portal and reconciliation.
	Query bool
}

// AllRoles is the single process: every part.
var AllRoles = Roles{Ingest: true, Validator: true, Writer: true, Query: true}

// Storage reports whether the roles need the embedded ClickHouse engine.
func (r Roles) Storage() bool { return r.Writer || r.Query }

// HTTP reports whether the roles serve API routes (and so need the API keys).
func (r Roles) HTTP() bool { return r.Ingest || r.Query }

// String lists the roles as LOGBOOK_ROLES spells them.
func (r Roles) String() string {
	var names []string
	for _, n := range []struct {
		on   bool
		name string
	}{{r.Ingest, "ingest"}, {r.Validator, "validator"}, {r.Writer, "writer"}, {r.Query, "query"}} {
		if n.on {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// RolesFromEnv reads LOGBOOK_ROLES: a comma-separated list of ingest, validator, writer and query,
// or all (the default).
func RolesFromEnv(env *config.Env) Roles {
	v := env.String("LOGBOOK_ROLES", "all")
	var r Roles
	for _, name := range strings.Split(v, ",") {
		switch strings.TrimSpace(name) {
		case "all":
			r = AllRoles
		case "ingest":
			r.Ingest = true
		case "validator":
			r.Validator = true
		case "writer":
			r.Writer = true
		case "query":
			r.Query = true
		default:
			env.Fail("LOGBOOK_ROLES", v, "must list roles among ingest, validator, writer and query (comma-separated), or all")
			return AllRoles
		}
	}
	return r
}
