package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
)

// Admin is NATS for an administrative command (`logbook keys …`): the JetStream of a running
// Logbook reached over TCP, or that of a stopped one opened from its data directory.
type Admin struct {
	JS    jetstream.JetStream
	close func()
}

// OpenAdmin opens JetStream for an administrative command. With natsURL (the LOGBOOK_NATS_LISTEN
// address of a running single process, or a cluster) it connects there; otherwise it starts the
// embedded NATS server on dataDir, which works only while no Logbook runs on it
// (ErrDataDirInUse). It never creates or reconfigures streams: a command run with other
// LOGBOOK_STREAM_* values than the server's must not change its limits (Logbook must have started
// once). Close ends it.
func OpenAdmin(ctx context.Context, dataDir, natsURL string, auth natsx.Auth) (*Admin, error) {
	opts, err := auth.Options()
	if err != nil {
		return nil, err
	}
	if natsURL != "" {
		nc, js, err := natsx.Connect(natsURL, "logbook-admin", opts...)
		if err != nil {
			return nil, err
		}
		return &Admin{JS: js, close: nc.Close}, nil
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create data folder %s: %w", dataDir, err)
	}
	lock, err := lockDataDir(ctx, dataDir, 0, slog.New(slog.DiscardHandler))
	if errors.Is(err, ErrDataDirInUse) {
		return nil, fmt.Errorf("%w: stop it, use its /admin/keys route, or start it with LOGBOOK_NATS_LISTEN=127.0.0.1:4222 and run this with LOGBOOK_NATS_URL=nats://127.0.0.1:4222", err)
	}
	if err != nil {
		return nil, err
	}
	ns, err := natsembed.Start(natsembed.Config{StoreDir: filepath.Join(dataDir, "nats"), User: auth.User, Password: auth.Password})
	if err != nil {
		_ = lock.release()
		return nil, err
	}
	stop := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = lock.release()
	}
	nc, js, err := natsx.ConnectInProcess(ns, "logbook-admin", opts...)
	if err != nil {
		stop()
		return nil, err
	}
	if _, err := js.Stream(ctx, event.StreamRaw); err != nil {
		nc.Close()
		stop()
		return nil, fmt.Errorf("no Logbook data in %s (start Logbook on it once first): %w", dataDir, err)
	}
	return &Admin{JS: js, close: func() {
		_ = natsx.DrainAndWait(nc, 10*time.Second)
		stop()
	}}, nil
}

// Close disconnects (and stops the embedded server, releasing the data directory).
func (a *Admin) Close() { a.close() }
