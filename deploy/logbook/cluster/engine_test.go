package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/logbookhq/logbook/pkg/store"
)

// The storage node's rows are counted on its data directory, by this test binary started again as
// a child (the engine opens one data directory per process, and the storage process holds it
// while it runs): once before the storage node first starts, to stop merges, and once after it
// has stopped, to count rows per event id.
const (
	engineTaskEnv = "LOGBOOK_CLUSTER_ENGINE_TASK" // prepare or rows
	engineDirEnv  = "LOGBOOK_CLUSTER_ENGINE_DIR"  // the storage node's LOGBOOK_DATA_DIR
	engineOrgsEnv = "LOGBOOK_CLUSTER_ENGINE_ORGS" // rows: the organizations, comma-separated
	engineMarker  = "ENGINE-RESULT "
)

// mergesStopped are MergeTree settings under which no merge is ever selected (no part is small
// enough), kept in the events table's definition so they hold from the engine's start on: rows
// stored twice stay two rows, and the count below sees them. ReplacingMergeTree would otherwise
// collapse them at some merge and hide a duplicate from the check.
const mergesStopped = "max_bytes_to_merge_at_max_space_in_pool = 1, max_bytes_to_merge_at_min_space_in_pool = 1"

// engineChild runs the task the parent asked for and prints its result; it returns the exit code.
func engineChild(task string) int {
	ctx := context.Background()
	dir := filepath.Join(os.Getenv(engineDirEnv), "clickhouse")
	db, err := store.OpenEmbedded("", dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to open the engine:", err)
		return 1
	}
	defer db.Close()
	s := store.New(db)
	var out any
	switch task {
	case "prepare":
		if err := s.Migrate(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := db.Exec(ctx, "ALTER TABLE events MODIFY SETTING "+mergesStopped, nil); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop merges:", err)
			return 1
		}
		out = "merges stopped"
	case "rows":
		ddl, err := s.CreateTableQuery(ctx, "events")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, setting := range strings.Split(mergesStopped, ", ") {
			if !strings.Contains(ddl, setting) {
				fmt.Fprintf(os.Stderr, "merges were not stopped on the events table (%s missing): a merge could hide a duplicate\n", setting)
				return 1
			}
		}
		rows := map[string]map[string]uint64{}
		for _, org := range strings.Split(os.Getenv(engineOrgsEnv), ",") {
			r, err := db.Query(ctx, `SELECT id, count() FROM events WHERE organization_id = {org:String} GROUP BY id`,
				store.Params{"org": store.Text(org)})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			rows[org] = map[string]uint64{}
			for r.Next() {
				var id string
				var n uint64
				if err := r.Scan(&id, &n); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				rows[org][id] = n
			}
			if err := r.Err(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			r.Close()
		}
		out = rows
	default:
		fmt.Fprintln(os.Stderr, "unknown task", task)
		return 1
	}
	b, _ := json.Marshal(out)
	fmt.Println(engineMarker + string(b))
	return 0
}

// engine runs task in a child on the storage node's data directory dir and decodes its result
// into out.
func engine(t *testing.T, task, dir string, orgs []string, out any) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), engineTaskEnv+"="+task, engineDirEnv+"="+dir, engineOrgsEnv+"="+strings.Join(orgs, ","))
	b, err := cmd.CombinedOutput()
	_, res, found := strings.Cut(string(b), engineMarker)
	if err != nil || !found {
		t.Fatalf("engine task %s on %s failed: %v\n%s", task, dir, err, b)
	}
	res, _, _ = strings.Cut(res, "\n")
	if err := json.Unmarshal([]byte(res), out); err != nil {
		t.Fatalf("engine task %s: %v: %s", task, err, res)
	}
}
