package natsx

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/logbookhq/logbook/pkg/config"
)

// Auth is how a Logbook process proves who it is to NATS and checks the server's certificate. At
// most one way to authenticate is set: a user and password, a credentials file (a user JWT and its
// nkey seed, from nsc or an operator), or an nkey seed file. TLS is used when the URL says tls://,
// when the server requires it, or when CAFile is set.
type Auth struct {
	// User and Password: LOGBOOK_NATS_USER and LOGBOOK_NATS_PASSWORD.
	User, Password string
	// CredsFile: LOGBOOK_NATS_CREDS, a .creds file (JWT and nkey seed).
	CredsFile string
	// NKeySeedFile: LOGBOOK_NATS_NKEY, a file holding an nkey seed (SU…) whose public key the
	// server lists as a user.
	NKeySeedFile string
	// CAFile: LOGBOOK_NATS_TLS_CA, the PEM certificate authority that signed the server's
	// certificate (TLS on; without it the system's roots are trusted).
	CAFile string
	// CertFile and KeyFile: LOGBOOK_NATS_TLS_CERT and LOGBOOK_NATS_TLS_KEY, a client certificate
	// for servers that verify clients (mutual TLS).
	CertFile, KeyFile string
}

// AuthFromEnv reads the LOGBOOK_NATS_* credential and TLS variables, recording a problem in env for
// an incomplete pair, more than one way to authenticate, or a file that cannot be read.
func AuthFromEnv(env *config.Env) Auth {
	a := Auth{
		User:         env.String("LOGBOOK_NATS_USER", ""),
		Password:     env.String("LOGBOOK_NATS_PASSWORD", ""),
		CredsFile:    env.String("LOGBOOK_NATS_CREDS", ""),
		NKeySeedFile: env.String("LOGBOOK_NATS_NKEY", ""),
		CAFile:       env.String("LOGBOOK_NATS_TLS_CA", ""),
		CertFile:     env.String("LOGBOOK_NATS_TLS_CERT", ""),
		KeyFile:      env.String("LOGBOOK_NATS_TLS_KEY", ""),
	}
	if a.User != "" && a.Password == "" {
		env.Fail("LOGBOOK_NATS_PASSWORD", "", "must be set with LOGBOOK_NATS_USER")
	}
	if a.Password != "" && a.User == "" {
		env.Fail("LOGBOOK_NATS_USER", "", "must be set with LOGBOOK_NATS_PASSWORD")
	}
	ways := 0
	for _, set := range []bool{a.User != "", a.CredsFile != "", a.NKeySeedFile != ""} {
		if set {
			ways++
		}
	}
	if ways > 1 {
		env.Fail("LOGBOOK_NATS_CREDS", a.CredsFile, "set one of LOGBOOK_NATS_USER/PASSWORD, LOGBOOK_NATS_CREDS or LOGBOOK_NATS_NKEY, not several")
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		env.Fail("LOGBOOK_NATS_TLS_CERT", a.CertFile, "must be set together with LOGBOOK_NATS_TLS_KEY")
	}
	for _, f := range []struct{ name, path string }{{"LOGBOOK_NATS_CREDS", a.CredsFile}, {"LOGBOOK_NATS_NKEY", a.NKeySeedFile},
		{"LOGBOOK_NATS_TLS_CA", a.CAFile}, {"LOGBOOK_NATS_TLS_CERT", a.CertFile}, {"LOGBOOK_NATS_TLS_KEY", a.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			env.Fail(f.name, f.path, "must be a readable file")
		}
	}
	return a
}

// Authenticates reports whether a carries credentials.
func (a Auth) Authenticates() bool {
	return a.User != "" || a.CredsFile != "" || a.NKeySeedFile != ""
}

// Options returns the nats.go options that apply a.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read the nkey seed in LOGBOOK_NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}
