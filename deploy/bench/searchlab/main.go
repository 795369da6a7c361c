// Command searchlab builds a 10M-row events table with SQL and times search queries (not committed).
package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/logbookhq/logbook/deploy/bench/benchmark"
	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
)

func zipfCDF(n int, s float64) []string {
	out := make([]string, n)
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		out[k] = strconv.FormatFloat(sum, 'g', 8, 64)
	}
	for k := range out {
		v, _ := strconv.ParseFloat(out[k], 64)
		out[k] = strconv.FormatFloat(v/sum, 'g', 8, 64)
	}
	return out
}

func fillSQL(from, to, total int64, end time.Time) string {
	acts := "['" + strings.Join(benchmark.Actions, "','") + "']"
	cdf := "[" + strings.Join(zipfCDF(30, 1.1), ",") + "]"
	spanMs := int64(365 * 24 * time.Hour / time.Millisecond)
	startMs := end.UnixMilli() - spanMs
	// actor rank k: continuous inverse of zipf(5000, 0.9)
	return fmt.Sprintf(`INSERT INTO events (organization_id, occurred_at, id, received_at, retention_days, action, version,
 actor_id, actor_type, actor_name, target_ids, target_types, location, user_agent, metadata, search_text,
 actor_metadata_json, targets_json, metadata_json)
WITH
 (sipHash64(number, 1) %% 1000000000) / 1e9 AS u1,
 (sipHash64(number, 2) %% 1000000000) / 1e9 AS u2,
 (sipHash64(number, 3) %% 1000000000) / 1e9 AS u3,
 multiIf(u1 < 0.40, 'org_01BENCHACME', u1 < 0.65, 'org_01BENCHGLOBEX', u1 < 0.80, 'org_01BENCHINITECH', u1 < 0.92, 'org_01BENCHUMBRELLA', 'org_01BENCHHOOLI') AS org,
 %s[arrayFirstIndex(x -> x >= u2, %s)] AS act,
 least(4999, toUInt32(floor(pow(u3 * (pow(5001, 0.1) - 1) + 1, 10))) - 1) AS k,
 sipHash64(number, 4) %% 20 = 0 AS iskey,
 if(iskey, 'key_01HBENCH' || leftPad(toString(sipHash64(number, 5) %% 200), 6, '0'), 'user_01H' || substring(org, length(org) - 3, 4) || leftPad(toString(k), 5, '0')) AS aid,
 if(iskey, 'CI deploy key', ['Jon','Ada','Grace','Linus','Maria','Wei','Amara','Sofia','Kenji','Olga','Priya','Diego','Fatima','Lars','Chen','Noor','Tomasz','Aiko','Kwame','Elena'][k %% 20 + 1] || ' ' ||
   ['Smith','Lovelace','Hopper','Okafor','Nakamura','Kowalski','Haddad','Johansson','Fernandes','Ivanova','Mbeki','Rossi','Tanaka','Schmidt','Garcia','Nguyen','Dubois','Kaur','Petrov','Moreau','Yilmaz','Andersen','Castillo','Osei','Larsen'][intDiv(k, 20) %% 25 + 1]) AS aname,
 splitByChar('.', act)[1] AS prefix,
 transform(prefix, ['settings','sso','org'], ['workspace','connection','organization'], prefix) AS ttype,
 ttype || '_01H' || leftPad(toString(sipHash64(number, 6) %% 100000), 8, '0') AS t1,
 sipHash64(number, 7) %% 3 = 0 AS two,
 'team_01H' || leftPad(toString(sipHash64(number, 8) %% 500), 5, '0') AS t2,
 'Team ' || ['Smith','Lovelace','Hopper','Okafor','Nakamura','Kowalski','Haddad','Johansson','Fernandes','Ivanova','Mbeki','Rossi','Tanaka','Schmidt','Garcia','Nguyen','Dubois','Kaur','Petrov','Moreau','Yilmaz','Andersen','Castillo','Osei','Larsen'][sipHash64(number, 9) %% 25 + 1] AS t2name,
 toString(1 + sipHash64(number, 10) %% 223) || '.' || toString(sipHash64(number, 11) %% 256) || '.' || toString(sipHash64(number, 12) %% 256) || '.' || toString(1 + sipHash64(number, 13) %% 254) AS loc,
 ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36','Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36','Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0','Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1','workos-node/11.0.0/node/22.4.0'][sipHash64(number, 14) %% 5 + 1] AS ua,
 toString(1 + sipHash64(number, 15) %% 3) AS attempts,
 if(sipHash64(number, 16) %% 2 = 0, 'true', 'false') AS mfa,
 '/api/v1/' || prefix || 's/' || prefix || '_01H' || leftPad(toString(sipHash64(number, 17) %% 100000), 8, '0') AS path,
 ['free','starter','pro','enterprise'][sipHash64(number, 18) %% 4 + 1] AS plan,
 ['us-east-1','eu-west-1','ap-southeast-2'][sipHash64(number, 19) %% 3 + 1] AS region,
 'req_' || lower(hex(sipHash64(number, 20))) AS reqid,
 'sess_' || substring(lower(hex(sipHash64(number, 21))), 1, 12) AS sessid
SELECT org,
 fromUnixTimestamp64Milli(toInt64(%d + number * %d / %d + sipHash64(number, 22) %% 60000), 'UTC'),
 'ID' || leftPad(toString(number), 24, '0'),
 now64(3), 0, act, 1, aid, if(iskey, 'api_key', 'user'), aname,
 if(two, [t1, t2], [t1]), if(two, [ttype, 'team'], [ttype]), loc, ua,
 map('attempts', attempts, 'mfa', mfa, 'path', path, 'plan', plan, 'region', region, 'request_id', reqid, 'session_id', sessid),
 lower(arrayStringConcat([aid, aname, t1] || if(two, [t2, t2name], []) || [loc, ua, attempts, mfa, path, plan, region, reqid, sessid], '\n')),
 '',
 '[{"id":"' || t1 || '","type":"' || ttype || '"}' || if(two, ',{"id":"' || t2 || '","name":"' || t2name || '","type":"team"}', '') || ']',
 '{"attempts":' || attempts || ',"mfa":' || mfa || ',"path":"' || path || '","plan":"' || plan || '","region":"' || region || '","request_id":"' || reqid || '","session_id":"' || sessid || '"}'
FROM numbers(%d, %d)`, acts, cdf, startMs, spanMs, total, from, to-from)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func scalar(ctx context.Context, db *store.Embedded, q string) string {
	rows, err := db.Query(ctx, q, nil)
	must(err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		must(rows.Scan(&s))
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

var End = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func main() {
	ctx := context.Background()
	dir := os.Args[2]
	db, err := store.OpenEmbedded(os.Getenv("LOGBOOK_CHDB_LIB"), dir)
	must(err)
	st := store.New(db)
	defer st.Close()
	switch os.Args[1] {
	case "fill":
		must(st.Migrate(ctx))
		n, _ := strconv.ParseInt(os.Args[3], 10, 64)
		chunk := int64(1_000_000)
		for off := int64(0); off < n; off += chunk {
			t := time.Now()
			must(db.Exec(ctx, fillSQL(off, min(n, off+chunk), n, End), nil))
			fmt.Println("filled", off+chunk, time.Since(t))
		}
		fmt.Println(scalar(ctx, db, "SELECT toString(count()) || ' parts ' || toString(uniqExact(name)) FROM system.parts WHERE active AND table = 'events'"))
	case "sql":
		fmt.Println(scalar(ctx, db, os.Args[3]))
	case "exec":
		must(db.Exec(ctx, os.Args[3], nil))
	case "insbench":
		rounds, _ := strconv.Atoi(os.Args[3])
		rows, _ := strconv.Atoi(os.Args[4])
		insbench(ctx, st, db, rounds, rows, os.Args[5:])
	case "raw":
		n, _ := strconv.Atoi(os.Args[3])
		raw(ctx, db, n, os.Args[4:])
	case "cmp":
		n, _ := strconv.Atoi(os.Args[3])
		cmp(ctx, st, db, n)
	case "bench":
		n, _ := strconv.Atoi(os.Args[3])
		bench(ctx, st, db, n)
	}
}

type kind struct {
	name string
	f    func(r *rand.Rand) store.Filter
}

var org = "org_01BENCHACME"

var kinds = []kind{
	{"range+action", func(r *rand.Rand) store.Filter {
		from := End.Add(-time.Duration(r.IntN(335)+30) * 24 * time.Hour)
		return store.Filter{Org: org, Actions: []string{benchmark.Actions[r.IntN(10)]}, Start: from, End: from.Add(30 * 24 * time.Hour)}
	}},
	{"actor_ids", func(r *rand.Rand) store.Filter {
		// same Zipf as the bench: draw via the continuous inverse
		u := r.Float64()
		k := min(4999, int(math.Floor(math.Pow(u*(math.Pow(5001, 0.1)-1)+1, 10)))-1)
		return store.Filter{Org: org, ActorIDs: []string{benchmark.ActorID(org, k)}}
	}},
	{"q surname", func(r *rand.Rand) store.Filter {
		names := []string{"Smith", "Lovelace", "Hopper", "Okafor", "Nakamura", "Kowalski", "Haddad", "Johansson",
			"Fernandes", "Ivanova", "Mbeki", "Rossi", "Tanaka", "Schmidt", "Garcia", "Nguyen", "Dubois", "Kaur",
			"Petrov", "Moreau", "Yilmaz", "Andersen", "Castillo", "Osei", "Larsen"}
		return store.Filter{Org: org, Text: names[r.IntN(len(names))]}
	}},
	{"q target id", func(r *rand.Rand) store.Filter {
		return store.Filter{Org: org, Text: fmt.Sprintf("document_01H%08d", r.IntN(100_000))}
	}},
	{"newest page", func(r *rand.Rand) store.Filter { return store.Filter{Org: org} }},
}

func bench(ctx context.Context, st *store.Store, db *store.Embedded, n int) {
	only := os.Getenv("KINDS")
	for _, k := range kinds {
		if only != "" && !strings.Contains(only, k.name) {
			continue
		}
		r := rand.New(rand.NewPCG(1, 2))
		var lat []time.Duration
		hits := 0
		for i := range n + 3 {
			f := k.f(r)
			t := time.Now()
			evs, err := st.Search(ctx, f, true, nil, 50)
			must(err)
			if i >= 3 {
				lat = append(lat, time.Since(t))
				hits += len(evs)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Printf("%-14s p50 %6.1fms p95 %6.1fms hits %.1f\n", k.name, ms(lat[len(lat)/2]), ms(lat[len(lat)*95/100]), float64(hits)/float64(n))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// insbench: variants[0] is the table as shipped; each further arg is an ALTER TABLE events ... clause
// set for a variant. Rounds alternate variants, each a fresh table loaded with the same rows.
func insbench(ctx context.Context, st *store.Store, db *store.Embedded, rounds, rows int, alters []string) {
	must(st.Migrate(ctx))
	must(db.Exec(ctx, "RENAME TABLE events TO events_shipped", nil))
	g := &benchmark.Gen{End: time.Now(), Span: 365 * 24 * time.Hour, N: int64(rows), Seed: 7}
	now := time.Now()
	var batches [][]*event.Record
	for off := 0; off < rows; off += 10_000 {
		var b []*event.Record
		for i := off; i < min(rows, off+10_000); i++ {
			e := g.At(int64(i))
			b = append(b, e.Record(benchmark.ULIDLike(now, uint64(i)), now))
		}
		batches = append(batches, b)
	}
	variants := append([]string{""}, alters...)
	rates := make([][]float64, len(variants))
	for r := range rounds {
		for vi, alter := range variants {
			must(db.Exec(ctx, "CREATE TABLE events AS events_shipped", nil))
			if alter != "" {
				must(db.Exec(ctx, "ALTER TABLE events "+alter, nil))
			}
			must(db.Exec(ctx, "SYSTEM STOP MERGES events", nil))
			var spent time.Duration
			c0 := selfCPU()
			for bi, b := range batches {
				t := time.Now()
				must(st.Insert(ctx, fmt.Sprintf("ib-%d-%d-%d", r, vi, bi), b))
				spent += time.Since(t)
			}
			cpu := selfCPU() - c0
			rate := float64(rows) / cpu.Seconds()
			rates[vi] = append(rates[vi], rate)
			fmt.Printf("round %d variant %d: %.0f rows/s wall, %.1f us CPU/row (%.0f rows per CPU-second)\n", r, vi, float64(rows)/spent.Seconds(), float64(cpu.Microseconds())/float64(rows), rate)
			must(db.Exec(ctx, "DROP TABLE events SYNC", nil))
		}
	}
	for vi := range variants {
		s := append([]float64(nil), rates[vi]...)
		sort.Float64s(s)
		fmt.Printf("variant %d %q: median %.0f rows/s (%.0f%% of shipped)\n", vi, variants[vi], s[len(s)/2], 100*s[len(s)/2]/median(rates[0]))
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[len(s)/2]
}

const sel = `SELECT id, organization_id, toUnixTimestamp64Milli(occurred_at), toUnixTimestamp64Milli(received_at),
  action, version, actor_id, actor_type, actor_name, actor_metadata_json, targets_json, location, user_agent, metadata_json
FROM events
WHERE organization_id = {org:String}
  AND (retention_days = 0 OR occurred_at >= now64(3) - toIntervalDay(retention_days))`

func where(f store.Filter, p store.Params) string {
	p["org"] = store.Text(f.Org)
	w := ""
	if len(f.Actions) > 0 {
		p["actions"] = store.Array(f.Actions)
		w += "\n  AND (action IN {actions:Array(String)})"
	}
	if len(f.ActorIDs) > 0 {
		p["actor_ids"] = store.Array(f.ActorIDs)
		w += "\n  AND actor_id IN {actor_ids:Array(String)}"
	}
	if !f.Start.IsZero() {
		p["start"] = strconv.FormatInt(f.Start.UnixMilli(), 10)
		p["end"] = strconv.FormatInt(f.End.UnixMilli(), 10)
		w += "\n  AND occurred_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')\n  AND occurred_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC')"
	}
	if f.Text != "" {
		p["text"] = store.Text("%" + strings.ReplaceAll(strings.ToLower(f.Text), "_", "\\_") + "%")
		w += "\n  AND search_text LIKE {text:String}"
	}
	return w
}

// raw runs each kind with each variant (a SQL tail: ORDER BY ... LIMIT ... SETTINGS ...), interleaved.
func raw(ctx context.Context, db *store.Embedded, n int, variants []string) {
	only := os.Getenv("KINDS")
	for _, k := range kinds {
		if only != "" && !strings.Contains(only, k.name) {
			continue
		}
		r := rand.New(rand.NewPCG(1, 2))
		lat := make([][]time.Duration, len(variants))
		hits := make([]int, len(variants))
		for i := range n + 2 {
			f := k.f(r)
			for vi, v := range variants {
				p := store.Params{}
				q := sel + where(f, p) + "\n" + v
				t := time.Now()
				rows, err := db.Query(ctx, q, p)
				must(err)
				c := 0
				for rows.Next() {
					c++
				}
				rows.Close()
				if i >= 2 {
					lat[vi] = append(lat[vi], time.Since(t))
					hits[vi] += c
				}
			}
		}
		for vi := range variants {
			l := lat[vi]
			sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
			fmt.Printf("%-14s v%d p50 %6.1fms p95 %6.1fms hits %.1f\n", k.name, vi, ms(l[len(l)/2]), ms(l[len(l)*95/100]), float64(hits[vi])/float64(n))
		}
	}
}

// cmp: before = the old single query on the n-gram index; after = Store.Search (windows, text index).
func cmp(ctx context.Context, st *store.Store, db *store.Embedded, n int) {
	const before = "ORDER BY toStartOfHour(occurred_at) DESC, occurred_at DESC, id DESC LIMIT 50 SETTINGS ignore_data_skipping_indices = 'idx_search_tokens'"
	only := os.Getenv("KINDS")
	for _, k := range kinds {
		if only != "" && !strings.Contains(only, k.name) {
			continue
		}
		r := rand.New(rand.NewPCG(1, 2))
		var lb, la []time.Duration
		var hb, ha int
		for i := range n + 2 {
			f := k.f(r)
			p := store.Params{}
			q := sel + where(f, p) + "\n" + before
			t := time.Now()
			rows, err := db.Query(ctx, q, p)
			must(err)
			c := 0
			for rows.Next() {
				c++
			}
			rows.Close()
			d := time.Since(t)
			t = time.Now()
			evs, err := st.Search(ctx, f, true, nil, 50)
			must(err)
			if i >= 2 {
				lb, la = append(lb, d), append(la, time.Since(t))
				hb, ha = hb+c, ha+len(evs)
			}
		}
		for _, x := range [][]time.Duration{lb, la} {
			sort.Slice(x, func(i, j int) bool { return x[i] < x[j] })
		}
		fmt.Printf("%-14s before p50 %6.1fms p95 %6.1fms hits %.1f | after p50 %6.1fms p95 %6.1fms hits %.1f | p50 ratio %.2f\n", k.name,
			ms(lb[len(lb)/2]), ms(lb[len(lb)*95/100]), float64(hb)/float64(n), ms(la[len(la)/2]), ms(la[len(la)*95/100]), float64(ha)/float64(n),
			float64(la[len(la)/2])/float64(lb[len(lb)/2]))
	}
}
