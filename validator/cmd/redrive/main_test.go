package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/schema"
	"github.com/logbookhq/logbook/validator/redrive"
	"github.com/logbookhq/logbook/validator/worker"
)

// The command against a real NATS server reached over TCP, as in a deployment of services: a dry
// run lists and changes nothing, the redrive puts the event back through a running validator, a
// second run finds it done.
func TestRedriveCommand(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, js, err := natsx.Connect(ns.ClientURL(), "test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	require.NoError(t, natsx.Prepare(ctx, js, natsx.DefaultStreamLimits()))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := schema.NewRegistry(ctx, js, log)
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	wctx, cancel := context.WithCancel(ctx)
	w, err := worker.New(wctx, js, reg, worker.Config{BatchSize: 10, FetchWait: 100 * time.Millisecond}, log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// A valid event an earlier version dead-lettered because the valid stream was full.
	rec := &event.Record{ID: "01CMD00000000000000000001", OrganizationID: "org_cmd", ReceivedAt: time.Now().UTC().Truncate(time.Millisecond),
		Event: event.Event{Action: "doc.read", OccurredAt: time.Now().UTC(), Actor: event.Entity{ID: "u", Type: "user"},
			Targets: []event.Entity{{ID: "d", Type: "doc"}}, Context: event.Context{Location: "127.0.0.1"}}}
	data, err := rec.Marshal()
	require.NoError(t, err)
	m := nats.NewMsg(event.RejectedSubject(rec.OrganizationID))
	m.Data = data
	m.Header.Set(event.HeaderRejectReason, "delivered 21 times without being settled; giving up")
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)

	env := config.FromMap(map[string]string{"LOGBOOK_NATS_URL": ns.ClientURL(), "LOGBOOK_LOG_LEVEL": "error"})
	runCmd := func(args ...string) (int, *redrive.Report) {
		var out bytes.Buffer
		code, err := run(ctx, env, args, &out)
		if code == 0 {
			require.NoError(t, err)
		}
		var rep redrive.Report
		if out.Len() > 0 {
			require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
		}
		return code, &rep
	}
	validCount := func() uint64 { // org_cmd's valid events (the redrive's own record goes to org_logbook)
		s, err := js.Stream(ctx, event.StreamValid)
		require.NoError(t, err)
		subject := event.ValidSubject(rec.OrganizationID)
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}

	code, rep := runCmd("-org", "org_cmd", "-category", "delivery_limit", "-since", "1h", "-dry-run")
	require.Equal(t, 0, code)
	assert.True(t, rep.Request.DryRun)
	require.Len(t, rep.Events, 1)
	assert.Equal(t, redrive.WouldRedrive, rep.Events[0].Outcome)
	assert.Equal(t, rec.ID, rep.Events[0].EventID)
	time.Sleep(300 * time.Millisecond)
	assert.Zero(t, validCount(), "a dry run changes nothing")

	code, rep = runCmd("-org", "org_cmd", "-category", "delivery_limit", "-since", "1h")
	require.Equal(t, 0, code)
	assert.Equal(t, 1, rep.Redriven)
	require.Eventually(t, func() bool { return validCount() == 1 }, 20*time.Second, 20*time.Millisecond)

	code, rep = runCmd("-org", "org_cmd", "-category", "delivery_limit")
	require.Equal(t, 0, code)
	assert.Equal(t, 1, rep.AlreadyRedriven)
	assert.Zero(t, rep.Redriven)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, uint64(1), validCount())

	code, _ = runCmd("-schema", "latest")
	assert.Equal(t, 2, code, "a bad flag value is a usage error")
	code, _ = runCmd("-nope")
	assert.Equal(t, 2, code)
	var out bytes.Buffer
	code, err = run(ctx, env, []string{"-org", "org.x"}, &out)
	assert.Equal(t, 2, code)
	assert.ErrorContains(t, err, "-org")
}
