// Package natstest starts a real nats-server with JetStream (file storage, sync always) inside the
// test process, with Logbook's streams and buckets prepared.
package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// New starts the server in t.TempDir(), prepares Logbook's streams and buckets with the default
// limits, and shuts everything down in t.Cleanup.
func New(t testing.TB) (*server.Server, jetstream.JetStream) {
	t.Helper()
	return NewWithLimits(t, natsx.DefaultStreamLimits())
}

// NewWithLimits is New with the given stream limits.
func NewWithLimits(t testing.TB, l natsx.StreamLimits) (*server.Server, jetstream.JetStream) {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("failed to start nats-server: %v", err)
	}
	nc, js, err := natsx.ConnectInProcess(ns, t.Name())
	if err != nil {
		ns.Shutdown()
		t.Fatalf("failed to connect: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if err := natsx.Prepare(context.Background(), js, l); err != nil {
		t.Fatalf("failed to prepare streams: %v", err)
	}
	return ns, js
}
