package apikeys

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/selfaudit"
)

// Usage describes the keys command.
const Usage = `usage:
  keys list
  keys create --name NAME [--scope SCOPE]... [--org ORGANIZATION]...
  keys revoke NAME

A key without --scope has every scope; --scope may repeat or list several separated by commas:
admin, events:write, events:read, schemas:write, schemas:read, retention:write, retention:read,
or read (every read scope). A key with --org acts only for those organizations.`

// ErrUsage is returned for a command line the keys command does not understand.
var ErrUsage = errors.New("bad command line")

// Command runs the keys command (args after "keys") with m, writing to out. ctx should name the
// operator (OperatorContext): the changes are recorded in the self-audit organization with it.
func Command(ctx context.Context, m *Manager, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w\n%s", ErrUsage, Usage)
	}
	switch args[0] {
	case "list":
		if len(args) != 1 {
			return fmt.Errorf("%w: keys list takes no arguments\n%s", ErrUsage, Usage)
		}
		return list(ctx, m, out)
	case "create":
		return create(ctx, m, args[1:], out)
	case "revoke":
		if len(args) != 2 {
			return fmt.Errorf("%w: keys revoke takes the key's name\n%s", ErrUsage, Usage)
		}
		k, _, err := m.Revoke(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Revoked API key %q (%s…).\n", k.Name, k.Prefix)
		return nil
	}
	return fmt.Errorf("%w: unknown keys command %q\n%s", ErrUsage, args[0], Usage)
}

// listFlag collects a repeated flag, each value possibly comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func create(ctx context.Context, m *Manager, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var spec apikey.Spec
	var scopes, orgs listFlag
	fs.StringVar(&spec.Name, "name", "", "the key's name")
	fs.Var(&scopes, "scope", "a scope the key is limited to (repeat, or separate with commas)")
	fs.Var(&orgs, "org", "an organization the key is limited to (repeat, or separate with commas)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return fmt.Errorf("%w: keys create --name NAME [--scope SCOPE]... [--org ORGANIZATION]...\n%s", ErrUsage, Usage)
	}
	spec.Scopes, spec.Organizations = scopes, orgs
	k, err := m.Create(ctx, spec)
	var fe *apikey.FieldError
	if errors.As(err, &fe) {
		return fmt.Errorf("%w: %s", ErrUsage, fe.Code)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Created API key %q (scopes: %s; organizations: %s).\n", k.Key.Name, scopeText(k.Key.Scopes), orgText(k.Key.Organizations))
	fmt.Fprintf(out, "The key is shown once; only its hash is stored:\n\n    %s\n\n", k.Secret)
	return nil
}

func list(ctx context.Context, m *Manager, out io.Writer) error {
	keys, err := m.List(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tPREFIX\tSCOPES\tORGANIZATIONS\tSOURCE\tCREATED\tLAST USED")
	for _, k := range keys {
		used := "never"
		if !k.LastUsed.IsZero() {
			used = event.FormatTime(k.LastUsed)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Prefix+"…", scopeText(k.Scopes), orgText(k.Organizations),
			k.Source, event.FormatTime(k.CreatedAt), used)
	}
	return w.Flush()
}

func orgText(orgs []string) string {
	if len(orgs) == 0 {
		return "all"
	}
	return strings.Join(orgs, ",")
}

// OperatorContext returns ctx naming who runs the command (the account, or $USER) and where (the
// host name), as the self-audit records' actor and location.
func OperatorContext(ctx context.Context) context.Context {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return selfaudit.Operator(ctx, name, host)
}
