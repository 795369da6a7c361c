package main

import (
	"context"
	"fmt"
	"os"

	"github.com/logbookhq/logbook/deploy/logbook/app"
	"github.com/logbookhq/logbook/pkg/apikey"
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/selfaudit"
	"github.com/logbookhq/logbook/queryapi/apikeys"
)

// runKeys is `logbook keys list|create|revoke …`: on the data directory of a stopped Logbook
// (LOGBOOK_DATA_DIR), or, with LOGBOOK_NATS_URL, through a running one's NATS listener.
func runKeys(ctx context.Context, env *config.Env, args []string) error {
	dataDir := env.String("LOGBOOK_DATA_DIR", "./data")
	natsURL := env.String("LOGBOOK_NATS_URL", "")
	auth := natsx.AuthFromEnv(env)
	if err := env.Err(); err != nil {
		return err
	}
	adm, err := app.OpenAdmin(ctx, dataDir, natsURL, auth)
	if err != nil {
		return err
	}
	defer adm.Close()
	store, err := apikey.Open(ctx, adm.JS)
	if err != nil {
		return err
	}
	m := apikeys.New(store, selfaudit.New(adm.JS, env.Logger()))
	return apikeys.Command(apikeys.OperatorContext(ctx), m, args, os.Stdout)
}

func keysMain(ctx context.Context, args []string) int {
	if err := runKeys(ctx, config.FromEnv(), args); err != nil {
		fmt.Fprintln(os.Stderr, "logbook keys:", err)
		return 1
	}
	return 0
}
