// Package storemetrics decorates a store.DB with Prometheus metrics, so neither the writer nor the
// query API threads metrics through its code (as Jaeger's spanstoremetrics does):
//
//	<svc>_batch_rows                   histogram of rows per successful INSERT (the writer's batch sizes)
//	<svc>_insert_duration_seconds      histogram of INSERT latency, failed attempts included
//	<svc>_insert_errors_total          failed INSERTs
//	<svc>_query_duration_seconds{op}   histogram of SELECT and other statements (op: query, each, exec)
//	<svc>_query_errors_total{op}       failed statements
package storemetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logbookhq/logbook/pkg/store"
)

// DB is a store.DB that records metrics. Safe for concurrent use.
type DB struct {
	next         store.DB
	batchRows    prometheus.Histogram
	insertTime   prometheus.Histogram
	insertErrors prometheus.Counter
	queryTime    *prometheus.HistogramVec
	queryErrors  *prometheus.CounterVec
}

var latency = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New registers svc's metrics on reg and returns next decorated.
func New(next store.DB, reg prometheus.Registerer, svc string) *DB {
	d := &DB{
		next: next,
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: svc + "_batch_rows", Help: "Rows per successful INSERT (batch size).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10), // 1 … 262144
		}),
		insertTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: svc + "_insert_duration_seconds", Help: "Time an INSERT into ClickHouse took, failed attempts included.",
			Buckets: latency,
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: svc + "_insert_errors_total", Help: "INSERTs into ClickHouse that failed (each is retried).",
		}),
		queryTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: svc + "_query_duration_seconds", Help: "Time a ClickHouse statement took, by kind (query, each: streamed, exec).",
			Buckets: latency,
		}, []string{"op"}),
		queryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: svc + "_query_errors_total", Help: "ClickHouse statements that failed, by kind.",
		}, []string{"op"}),
	}
	reg.MustRegister(d.batchRows, d.insertTime, d.insertErrors, d.queryTime, d.queryErrors)
	return d
}

// Decorator returns New as a function for store.Store.Decorate.
func Decorator(reg prometheus.Registerer, svc string) func(store.DB) store.DB {
	return func(next store.DB) store.DB { return New(next, reg, svc) }
}

func (d *DB) observe(op string, start time.Time, err error) {
	d.queryTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		d.queryErrors.WithLabelValues(op).Inc()
	}
}

// Exec implements store.DB.
func (d *DB) Exec(ctx context.Context, query string, params store.Params) error {
	start := time.Now()
	err := d.next.Exec(ctx, query, params)
	d.observe("exec", start, err)
	return err
}

// Query implements store.DB. The time covers running the query, not reading its rows.
func (d *DB) Query(ctx context.Context, query string, params store.Params) (store.Rows, error) {
	start := time.Now()
	rows, err := d.next.Query(ctx, query, params)
	d.observe("query", start, err)
	return rows, err
}

// Each implements store.DB. The time covers the whole stream, fn included.
func (d *DB) Each(ctx context.Context, query string, params store.Params, dest []any, fn func() error) error {
	start := time.Now()
	err := d.next.Each(ctx, query, params, dest, fn)
	d.observe("each", start, err)
	return err
}

// Insert implements store.DB.
func (d *DB) Insert(ctx context.Context, table string, columns []string, settings map[string]string, rows [][]any) error {
	start := time.Now()
	err := d.next.Insert(ctx, table, columns, settings, rows)
	d.insertTime.Observe(time.Since(start).Seconds())
	if err != nil {
		d.insertErrors.Inc()
		return err
	}
	d.batchRows.Observe(float64(len(rows)))
	return nil
}

// Close implements store.DB.
func (d *DB) Close() error { return d.next.Close() }
