//go:build docker

package servertest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcclickhouse "github.com/testcontainers/testcontainers-go/modules/clickhouse"
	tcnats "github.com/testcontainers/testcontainers-go/modules/nats"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/obs"
	"github.com/logbookhq/logbook/pkg/store"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// The images the compose file runs.
const (
	clickhouseImage = "clickhouse/clickhouse-server:26.7.3"
	natsImage       = "nats:2.15.2-alpine"
)

// requireDocker fails the test when no Docker engine answers: this file is compiled only with the
// docker build tag, which says one is there (make test adds the tag when `docker info` answers).
func requireDocker(t *testing.T) {
	t.Helper()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("docker provider panicked: %v", r)
			}
		}()
		p, err := testcontainers.ProviderDocker.GetProvider()
		if err != nil {
			return err
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.Health(ctx)
	}()
	if err != nil {
		t.Fatalf("built with -tags docker, but no Docker engine answers: %v", err)
	}
}

// The store suite the embedded engine passes (pkg/storetest) on a ClickHouse server through
// clickhouse-go/v2: same DDL, same SQL, same expectations.
func TestStoreSuiteOnAClickHouseServer(t *testing.T) {
	requireDocker(t)
	ctx := context.Background()
	ctr, err := tcclickhouse.Run(ctx, clickhouseImage,
		tcclickhouse.WithUsername("logbook"), tcclickhouse.WithPassword("logbook"), tcclickhouse.WithDatabase("logbook"))
	testcontainers.CleanupContainer(t, ctr)
	require.NoError(t, err)
	addr, err := ctr.ConnectionHost(ctx)
	require.NoError(t, err)
	db, err := store.OpenServer(ctx, store.ServerConfig{Addr: addr, Database: "logbook", Username: "logbook", Password: "logbook"})
	require.NoError(t, err)
	s := store.New(db)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Migrate(ctx))
	require.NoError(t, s.Ping(ctx))
	storetest.RunSuite(t, s)
}

// Logbook's streams and buckets on a NATS server from the image the compose file runs, checked
// the way every service checks them at start-up, and readiness following the server.
func TestStreamsOnANATSServer(t *testing.T) {
	requireDocker(t)
	ctx := context.Background()
	ctr, err := tcnats.Run(ctx, natsImage)
	testcontainers.CleanupContainer(t, ctr)
	require.NoError(t, err)
	url, err := ctr.ConnectionString(ctx)
	require.NoError(t, err)
	nc, js, err := natsx.Connect(url, "servertest")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, natsx.Prepare(ctx, js, natsx.DefaultStreamLimits()))
	for _, name := range []string{event.StreamRaw, event.StreamValid, event.StreamRejected} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		require.NoError(t, natsx.CheckStream(s.CachedInfo().Config))
	}
	ack, err := js.Publish(ctx, event.RawSubject("org_a"), []byte(`{}`), jetstream.WithMsgID("org_a:1"))
	require.NoError(t, err)
	dup, err := js.Publish(ctx, event.RawSubject("org_a"), []byte(`{}`), jetstream.WithMsgID("org_a:1"))
	require.NoError(t, err)
	assert.True(t, dup.Duplicate)
	assert.Equal(t, ack.Sequence, dup.Sequence)

	h := obs.NewHealth(slog.New(slog.DiscardHandler))
	h.Add("nats", obs.NATSCheck(js))
	_, ready := h.Ready(ctx)
	assert.True(t, ready)
}
