// Command keys lists, creates and revokes API keys of a deployment of separate services, through
// NATS (LOGBOOK_NATS_URL and the other LOGBOOK_* variables, as the services use them). Each change
// is recorded in the self-audit organization, naming the operator and the host. For the single
// process, run `logbook keys …` instead; a running deployment also serves /admin/keys.
//
//	keys list
//	keys create --name NAME [--scope SCOPE]... [--org ORGANIZATION]...
//	keys revoke NAME
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/queryapi/apikeys"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "keys:", err)
		if errors.Is(err, apikeys.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	env := config.FromEnv()
	url := env.String("LOGBOOK_NATS_URL", "nats://127.0.0.1:4222")
	if err := env.Err(); err != nil {
		return err
	}
	// Connect only: a command must not create or reconfigure the streams (natsx.Prepare would
	// apply this shell's LOGBOOK_STREAM_* values to a running deployment).
	nc, js, err := natsx.Connect(url, "logbook-keys")
	if err != nil {
		return err
	}
	defer nc.Close()
	store, err := apikey.Open(ctx, js)
	if err != nil {
		return err
	}
	m := apikeys.New(store, selfaudit.New(js, env.Logger()))
	return apikeys.Command(apikeys.OperatorContext(ctx), m, args, os.Stdout)
}
