package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natstest"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/storetest"
	"github.com/logbookhq/logbook/writer/reconcile"
)

// TestReconcileCost measures a reconciliation of RECONCILE_COST events (skipped when unset): the
// time it takes and the heap it holds, with one window over everything and with windows of a
// tenth of the events. docs/design.md extrapolates from it to 10M events.
//
//	RECONCILE_COST=200000 go test -run TestReconcileCost -v ./reconcile/
func TestReconcileCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RECONCILE_COST"))
	if n <= 0 {
		t.Skip("set RECONCILE_COST=<events> to measure")
	}
	ctx := context.Background()
	_, js := natstest.NewWithLimits(t, func() natsx.StreamLimits {
		l := natsx.DefaultStreamLimits()
		l.MaxBytes = 8 << 30
		l.Duplicates = time.Minute
		return l
	}())
	st := storetest.Shared(t)
	nc := js.Conn()
	orgs := 100
	start := time.Now()
	since := start.Add(-time.Second)
	raw := natsx.NewGroupCommit(nc, js, event.StreamRaw, natsx.DefaultGroupConfig())
	valid := natsx.NewGroupCommit(nc, js, event.StreamValid, natsx.DefaultGroupConfig())
	defer raw.Close()
	defer valid.Close()
	for from := 0; from < n; from += 1000 {
		var rs, vs []*nats.Msg
		var recs = make([]*event.Record, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			r := rec(fmt.Sprintf("org_cost_%03d", i%orgs), fmt.Sprintf("01COST%020d", i))
			data, err := r.Marshal()
			require.NoError(t, err)
			m := nats.NewMsg(event.RawSubject(r.OrganizationID))
			m.Data = data
			v := nats.NewMsg(event.ValidSubject(r.OrganizationID))
			v.Data = data
			rs, vs, recs = append(rs, m), append(vs, v), append(recs, r)
		}
		for _, err := range raw.PublishAll(ctx, rs) {
			require.NoError(t, err)
		}
		for _, err := range valid.PublishAll(ctx, vs) {
			require.NoError(t, err)
		}
		require.NoError(t, st.Insert(ctx, fmt.Sprintf("cost:%d", from), recs))
	}
	ackAll(t, js, event.StreamRaw, event.ConsumerValidator)
	ackAll(t, js, event.StreamValid, event.ConsumerWriter)
	span := time.Since(start)
	t.Logf("loaded %d events over %d organizations in %s", n, orgs, span.Round(time.Millisecond))

	for _, windows := range []int{1, 10} {
		window := span + time.Second
		if windows > 1 {
			window = span / time.Duration(windows)
		}
		runtime.GC()
		var base, peak runtime.MemStats
		runtime.ReadMemStats(&base)
		var top atomic.Uint64
		done := make(chan struct{})
		go func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					runtime.ReadMemStats(&peak)
					if peak.HeapInuse > top.Load() {
						top.Store(peak.HeapInuse)
					}
				}
			}
		}()
		began := time.Now()
		// A slack far below the window, as in production (1 minute against 1 hour): the test's
		// events span seconds, and a 1-minute slack would make every window read all of them.
		rep, err := reconcile.Run(ctx, js, st, reconcile.Options{Since: since, Window: window, Slack: 100 * time.Millisecond})
		took := time.Since(began)
		close(done)
		require.NoError(t, err)
		require.True(t, rep.OK)
		t.Logf("window %s (%d windows): %s, %.0f events/s, peak heap above the start %.1f MiB, peak window %d events, read raw %d valid %d stored ids %d",
			window.Round(time.Millisecond), rep.Cost.Windows, took.Round(time.Millisecond), float64(n)/took.Seconds(),
			float64(int64(top.Load())-int64(base.HeapInuse))/(1<<20), rep.Cost.PeakWindowEvents,
			rep.Cost.RawMessages, rep.Cost.ValidMessages, rep.Cost.StoredIDs)
	}
}

// ackAll settles every message of stream through the durable consumer name.
func ackAll(t *testing.T, js jetstream.JetStream, stream, name string) {
	c, err := js.CreateOrUpdateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckAllPolicy, MaxAckPending: -1})
	require.NoError(t, err)
	for {
		b, err := c.Fetch(5000, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		var last jetstream.Msg
		for m := range b.Messages() {
			last = m
		}
		if last == nil {
			return
		}
		require.NoError(t, last.DoubleAck(context.Background()))
	}
}
