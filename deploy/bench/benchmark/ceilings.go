package benchmark

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/logbookhq/logbook/ingest/gateway"
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
	InsertCPU  time.Duration // CPU per row during the INSERT ceiling (row building and the engine)
	PayloadLen int           // average record bytes
	// Publish: the gateway's own publish path (gateway.NewPublisher: the raw stream's group
	// committer, its batch shapes and streams) driven by Conc concurrent publishers, each waiting
	// for its own acknowledgement, with and without Idempotency-Keys: the ceiling of single-event
	// ingest at that concurrency.
	Publish []PublishCeiling
	// InsertIndexes: the INSERT ceiling of the events table without each skip index, and without
	// any (the first row is the table as shipped, measured again beside them).
	InsertIndexes []IndexCost
}

// PublishCeiling is one same-run publish ceiling.
type PublishCeiling struct {
	Conc  int
	Keyed bool
	Rate  float64
	Lat   []time.Duration
	Err   string
}

// publishCeiling finds the ceiling of (conc, keyed).
func (c *Ceilings) publishCeiling(conc int, keyed bool) *PublishCeiling {
	for i := range c.Publish {
		if p := &c.Publish[i]; p.Conc == conc && p.Keyed == keyed {
			return p
		}
	}
	return nil
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

// PublishCeilings measures the gateway's publish path (gateway.NewPublisher, gateway.RawMessage)
// on an embedded nats-server in dir with Logbook's streams and settings, for each concurrency and
// with and without Idempotency-Keys, each for d: conc goroutines each publish one record at a
// time and wait for its acknowledgement, as the gateway's request handlers do.
func PublishCeilings(ctx context.Context, dir string, g *Gen, concs []int, keys []bool, d time.Duration) ([]PublishCeiling, error) {
	ns, err := natsembed.Start(natsembed.Config{StoreDir: dir})
	if err != nil {
		return nil, err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, js, err := natsx.ConnectInProcess(ns, "bench-publish-ceiling")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	limits := natsx.DefaultStreamLimits()
	limits.MaxBytes = 4 << 30
	if err := natsx.Prepare(ctx, js, limits); err != nil {
		return nil, err
	}
	pub := gateway.NewPublisher(nc, js)
	defer pub.Close()
	const n = 20_000
	now := time.Now()
	recs := make([]*event.Record, n)
	payloads := make([][]byte, n)
	for i := range recs {
		e := g.At(int64(i))
		recs[i] = e.Record(ULIDLike(now, uint64(i)), now)
		if payloads[i], err = recs[i].Marshal(); err != nil {
			return nil, err
		}
	}
	var out []PublishCeiling
	var seq atomic.Int64
	for _, keyed := range keys {
		for _, conc := range concs {
			res := PublishCeiling{Conc: conc, Keyed: keyed}
			lats := make([][]time.Duration, conc)
			var failed atomic.Int64
			var firstErr atomic.Value
			pctx, cancel := context.WithTimeout(ctx, d)
			start := time.Now()
			var wg sync.WaitGroup
			for w := range conc {
				wg.Go(func() {
					for pctx.Err() == nil {
						i := seq.Add(1)
						rec := *recs[i%n]
						rec.ID = ULIDLike(now, uint64(i)+1<<40) // a fresh identity per publish
						key, digest := "", ""
						if keyed {
							key, digest = fmt.Sprintf("workos-node-bench-%d", i), fmt.Sprintf("%064x", i)
						}
						t := time.Now()
						err := pub.Publish(context.WithoutCancel(pctx), gateway.RawMessage(&rec, key, digest, payloads[i%n]))
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
							continue
						}
						lats[w] = append(lats[w], time.Since(t))
					}
				})
			}
			wg.Wait()
			cancel()
			for _, l := range lats {
				res.Lat = append(res.Lat, l...)
			}
			res.Rate = float64(len(res.Lat)) / time.Since(start).Seconds()
			if f := failed.Load(); f > 0 {
				res.Err = fmt.Sprintf("%d publishes failed: %v", f, firstErr.Load())
			}
			out = append(out, res)
			progress("  publish ceiling, %d concurrent, %s: %.0f msg/s, p50 %s, p99 %s", conc, keyName(keyed), res.Rate,
				FormatDuration(Percentile(res.Lat, 50)), FormatDuration(Percentile(res.Lat, 99)))
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func keyName(keyed bool) string {
	if keyed {
		return "with Idempotency-Key"
	}
	return "no Idempotency-Key"
}

// InsertCeiling opens the embedded ClickHouse engine (libPath) on dir in this process, migrates
// Logbook's schema and inserts rows rows of g in 10k-row store.Insert calls; only the INSERTs are
// timed. cpu is the process's CPU time per row during them (row building and the engine). Then,
// when indexRows > 0, InsertIndexCosts on the same engine. The engine is closed on return.
func InsertCeiling(ctx context.Context, libPath, dir string, g *Gen, rows, indexRows int64) (rate float64, cpu time.Duration, idx []IndexCost, err error) {
	db, err := store.OpenEmbedded(libPath, dir)
	if err != nil {
		return 0, 0, nil, err
	}
	st := store.New(db)
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return 0, 0, nil, err
	}
	const batchRows = 10_000
	var spent, used time.Duration
	now := time.Now()
	for off := int64(0); off < rows; off += batchRows {
		recs := make([]*event.Record, 0, batchRows)
		for i := off; i < min(rows, off+batchRows); i++ {
			e := g.At(i)
			recs = append(recs, e.Record(ULIDLike(now, uint64(i)), now))
		}
		t, c := time.Now(), selfCPU()
		if err := st.Insert(ctx, fmt.Sprintf("bench-ceiling-%d", off), recs); err != nil {
			return 0, 0, nil, err
		}
		spent += time.Since(t)
		used += selfCPU() - c
	}
	rate, cpu = float64(rows)/spent.Seconds(), used/time.Duration(rows)
	if indexRows > 0 {
		if idx, err = InsertIndexCosts(ctx, db, g, indexRows); err != nil {
			return 0, 0, nil, fmt.Errorf("index costs: %w", err)
		}
	}
	return rate, cpu, idx, nil
}

// selfCPU is the CPU time this process (all its threads, the engine's included) used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// IndexCost is the INSERT ceiling of the events table with one skip index left out ("" in
// Without: the table as shipped; "all": every skip index left out).
type IndexCost struct {
	Without string
	Expr    string // the index's expression and type, as ClickHouse reports them
	Rate    float64
	Again   bool // the table as shipped, measured again after the others (drift over the series)
}

// InsertIndexCosts measures, on the engine db already holds (the INSERT ceiling's), what each
// skip index of the events table costs an INSERT: a fresh copy of the table as shipped, then one
// without each index, then one without any, then the table as shipped again, each loaded with the same rows of g in 10k-row
// store.Insert calls. A copy is made with CREATE TABLE … AS (structure, indexes and settings) and
// ALTER TABLE … DROP INDEX, then dropped.
func InsertIndexCosts(ctx context.Context, db *store.Embedded, g *Gen, rows int64) ([]IndexCost, error) {
	st := store.New(db)
	if err := db.Exec(ctx, "RENAME TABLE events TO events_shipped", nil); err != nil {
		return nil, err
	}
	r, err := db.Query(ctx, "SELECT name, concat(expr, ' ', type_full) FROM system.data_skipping_indices WHERE database = currentDatabase() AND table = 'events_shipped' ORDER BY name", nil)
	if err != nil {
		return nil, err
	}
	variants := []IndexCost{{Without: ""}}
	for r.Next() {
		var v IndexCost
		if err := r.Scan(&v.Without, &v.Expr); err != nil {
			return nil, err
		}
		variants = append(variants, v)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	var all []string
	for _, v := range variants[1:] {
		all = append(all, "DROP INDEX "+v.Without)
	}
	variants = append(variants, IndexCost{Without: "all"}, IndexCost{Again: true})
	now := time.Now()
	recs := make([][]*event.Record, 0)
	for off := int64(0); off < rows; off += 10_000 {
		b := make([]*event.Record, 0, 10_000)
		for i := off; i < min(rows, off+10_000); i++ {
			e := g.At(i)
			b = append(b, e.Record(ULIDLike(now, uint64(i)), now))
		}
		recs = append(recs, b)
	}
	for vi := range variants {
		v := &variants[vi]
		if err := db.Exec(ctx, "CREATE TABLE events AS events_shipped", nil); err != nil {
			return nil, err
		}
		switch v.Without {
		case "":
		case "all":
			if err := db.Exec(ctx, "ALTER TABLE events "+strings.Join(all, ", "), nil); err != nil {
				return nil, err
			}
		default:
			if err := db.Exec(ctx, "ALTER TABLE events DROP INDEX "+v.Without, nil); err != nil {
				return nil, err
			}
		}
		var spent time.Duration
		for bi, b := range recs {
			t := time.Now()
			if err := st.Insert(ctx, fmt.Sprintf("bench-index-%d-%d", vi, bi), b); err != nil {
				return nil, err
			}
			spent += time.Since(t)
		}
		v.Rate = float64(rows) / spent.Seconds()
		progress("  INSERT without %q: %.0f rows/s", v.Without, v.Rate)
		if err := db.Exec(ctx, "DROP TABLE events SYNC", nil); err != nil {
			return nil, err
		}
	}
	return variants, db.Exec(ctx, "RENAME TABLE events_shipped TO events", nil)
}
