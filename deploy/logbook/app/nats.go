package app

import (
	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// natsFromEnv reads where the process's NATS is: LOGBOOK_NATS_URL (an external server; the embedded
// one is not started), else the embedded server, reachable over TCP only when LOGBOOK_NATS_LISTEN
// is set. The credentials (LOGBOOK_NATS_USER/PASSWORD and the rest of natsx.AuthFromEnv) apply to
// either; the embedded server takes a user and password only, and refuses to listen off loopback
// without them.
func natsFromEnv(env *config.Env) (listen, url string, auth natsx.Auth) {
	listen = env.Addr("LOGBOOK_NATS_LISTEN", "")
	url = env.String("LOGBOOK_NATS_URL", "")
	auth = natsx.AuthFromEnv(env)
	switch {
	case url != "" && listen != "":
		env.Fail("LOGBOOK_NATS_LISTEN", listen, "must be unset with LOGBOOK_NATS_URL (the embedded NATS server is not started then)")
	case url == "" && (auth.CredsFile != "" || auth.NKeySeedFile != ""):
		env.Fail("LOGBOOK_NATS_URL", "", "must be set to use LOGBOOK_NATS_CREDS or LOGBOOK_NATS_NKEY (the embedded NATS server takes LOGBOOK_NATS_USER and LOGBOOK_NATS_PASSWORD)")
	case url == "" && listen != "" && auth.User == "":
		if host, _, err := natsembed.ListenAddr(listen); err == nil && !natsembed.Loopback(host) {
			env.Fail("LOGBOOK_NATS_LISTEN", listen, "is off loopback: set LOGBOOK_NATS_USER and LOGBOOK_NATS_PASSWORD, or listen on 127.0.0.1")
		}
	}
	return listen, url, auth
}
