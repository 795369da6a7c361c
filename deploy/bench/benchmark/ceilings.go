package benchmark

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/natsembed"
	"github.com/logbookhq/logbook/pkg/natsx"
	"github.com/logbookhq/logbook/pkg/store"
)

// Ceilings are the same-run, same-machine upper bounds Logbook's figures are divided by.
type Ceilings struct {
	// AsyncPublish: plain asynchronous JetStream publishes of the gateway's records (with message
	// ids) into Logbook's raw stream configuration, sync always, one connection, bounded in-flight.
	AsyncPublish float64
	// BatchPublish: the same records in JetStream atomic batches of 1000, one batch at a time.
	BatchPublish float64
	// Insert: the same rows through store.Insert (10k-row INSERTs) into the embedded ClickHouse
	// engine, one goroutine, on a fresh table.
	Insert     float64
	InsertRows int64
	PayloadLen int // average record bytes
}

// records pre-generates n gateway records (the JetStream payload) from g.
func records(g *Gen, n int) [][]byte {
	out := make([][]byte, n)
	now := time.Now()
	for i := range out {
		e := g.At(int64(i))
		b, err := e.Record(ULIDLike(now, uint64(i)), now).Marshal()
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}

// JetStreamCeilings measures async and atomic-batch publishing on an embedded nats-server in dir
// (started here, with Logbook's own settings: file storage, sync always, Logbook's streams), each
// for d.
func JetStreamCeilings(ctx context.Context, dir string, g *Gen, d time.Duration) (async, batch float64, payload int, err error) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: dir})
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("bench-ceiling"))
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	var asyncErrs atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { asyncErrs.Add(1) }))
	if err != nil {
		return 0, 0, 0, err
	}
	limits := natsx.DefaultStreamLimits()
	limits.MaxBytes = 4 << 30
	if err := natsx.Prepare(ctx, js, limits); err != nil {
		return 0, 0, 0, err
	}
	payloads := records(g, 20_000)
	total := 0
	for _, p := range payloads {
		total += len(p)
	}
	payload = total / len(payloads)
	orgs := make([]string, len(payloads))
	for i := range payloads {
		orgs[i] = g.At(int64(i)).Org
	}
	msg := func(i int, prefix string) *nats.Msg {
		k := i % len(payloads)
		m := nats.NewMsg(event.RawSubject(orgs[k]))
		m.Data = payloads[k]
		m.Header.Set(jetstream.MsgIDHeader, orgs[k]+":"+prefix+strconv.Itoa(i))
		return m
	}

	// Plain async publish: the "raw JetStream publish" ceiling of the issue.
	start := time.Now()
	n := 0
	for time.Since(start) < d && ctx.Err() == nil {
		if _, err := js.PublishMsgAsync(msg(n, "a"), jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, 0, 0, fmt.Errorf("async publish: %w", err)
		}
		n++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return 0, 0, 0, fmt.Errorf("async publishes not acknowledged within 60s")
	}
	if e := asyncErrs.Load(); e > 0 {
		return 0, 0, 0, fmt.Errorf("async publish: %d errors", e)
	}
	async = float64(n) / time.Since(start).Seconds()

	// Atomic batches of 1000, one at a time: the group-commit ceiling.
	start = time.Now()
	n = 0
	for time.Since(start) < d && ctx.Err() == nil {
		id := nuid.Next()
		for j := 1; j <= 1000; j++ {
			m := msg(n, "b")
			n++
			m.Header.Set("Nats-Batch-Id", id)
			m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j))
			if j < 1000 {
				if err := nc.PublishMsg(m); err != nil {
					return 0, 0, 0, err
				}
				continue
			}
			m.Header.Set("Nats-Batch-Commit", "1")
			resp, err := nc.RequestMsg(m, 30*time.Second)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("batch commit: %w", err)
			}
			var ack struct {
				Error *jetstream.APIError `json:"error"`
				Count int                 `json:"count"`
			}
			if err := json.Unmarshal(resp.Data, &ack); err != nil || ack.Error != nil || ack.Count != 1000 {
				return 0, 0, 0, fmt.Errorf("batch commit refused: %s", resp.Data)
			}
		}
	}
	batch = float64(n) / time.Since(start).Seconds()
	return async, batch, payload, nil
}

// InsertCeiling opens the embedded ClickHouse engine (libPath) on dir in this process, migrates
// Logbook's schema and inserts rows rows of g in 10k-row store.Insert calls; only the INSERTs are
// timed. The engine is closed on return.
func InsertCeiling(ctx context.Context, libPath, dir string, g *Gen, rows int64) (float64, error) {
	db, err := store.OpenEmbedded(libPath, dir)
	if err != nil {
		return 0, err
	}
	st := store.New(db)
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return 0, err
	}
	const batchRows = 10_000
	var spent time.Duration
	now := time.Now()
	for off := int64(0); off < rows; off += batchRows {
		recs := make([]*event.Record, 0, batchRows)
		for i := off; i < min(rows, off+batchRows); i++ {
			e := g.At(i)
			recs = append(recs, e.Record(ULIDLike(now, uint64(i)), now))
		}
		t := time.Now()
		if err := st.Insert(ctx, fmt.Sprintf("bench-ceiling-%d", off), recs); err != nil {
			return 0, err
		}
		spent += time.Since(t)
	}
	return float64(rows) / spent.Seconds(), nil
}
