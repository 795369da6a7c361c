package natsembed_test

import (
	"errors"
	"net"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func start(t *testing.T, cfg natsembed.Config) error {
	t.Helper()
	ns, err := natsembed.Start(cfg)
	if err == nil {
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	return err
}

// A listener without a host binds loopback, never every interface.
func TestListenerWithoutHostIsLoopback(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: ":0"})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	addr, ok := ns.Addr().(*net.TCPAddr)
	require.True(t, ok, "a TCP listener")
	assert.True(t, addr.IP.IsLoopback(), "listens on %s", addr)
}

// Off loopback, the embedded server refuses to start without credentials.
func TestOffLoopbackNeedsCredentials(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		err := start(t, natsembed.Config{StoreDir: t.TempDir(), Listen: listen})
		assert.True(t, errors.Is(err, natsembed.ErrOpenListener), "%s: %v", listen, err)
	}
	require.NoError(t, start(t, natsembed.Config{StoreDir: t.TempDir(), Listen: "0.0.0.0:0", User: "logbook", Password: "s3cret-s3cret"}))
	assert.Error(t, start(t, natsembed.Config{StoreDir: t.TempDir(), User: "logbook"}), "a user without a password")
}

// With credentials, every client must present them, over TCP and in-process (the single process's
// own connection authenticates too).
func TestCredentialsAreRequired(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "logbook", Password: "s3cret-s3cret"})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	url := ns.ClientURL()

	_, _, err = natsx.Connect(url, "anonymous")
	assert.ErrorIs(t, err, nats.ErrAuthorization, "no credentials")
	_, _, err = natsx.Connect(url, "wrong", nats.UserInfo("logbook", "guess"))
	assert.ErrorIs(t, err, nats.ErrAuthorization, "a wrong password")

	nc, _, err := natsx.Connect(url, "tcp", nats.UserInfo("logbook", "s3cret-s3cret"))
	require.NoError(t, err)
	nc.Close()
	nc, _, err = natsx.ConnectInProcess(ns, "in-process", nats.UserInfo("logbook", "s3cret-s3cret"))
	require.NoError(t, err)
	nc.Close()
}
