package batcher

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/logbookhq/logbook/pkg/event"
	"github.com/logbookhq/logbook/pkg/store"
)

// A batch is stored as one or more pieces, each one INSERT. The pieces are a pure function of the
// batch (its records in sequence order, the retention stamps recorded with it, and the pieces its
// record lists as split), so every writer that stores or re-drives the same batch cuts it the same
// way and inserts each piece under the same token:
//
//   - groups: the batch's rows grouped by partition (store.PartitionOf, in partition order), at
//     most store.MaxPartitionsPerInsert partitions per group. A batch within the limit (live
//     traffic: one or two months) is a single group, inserted whole under the batch's token. A
//     history import spanning decades becomes several groups, so no INSERT is ever refused for
//     touching too many partitions.
//   - halves: a piece ClickHouse refuses as too large (memory, size) or as data is recorded as
//     split and replaced by its two halves: split at a partition boundary while it spans several
//     partitions, else at the middle row. Halving goes on until a piece is stored or is a single
//     row; a single row refused as data is rejected (the rejected stream, with the reason).
//
// A refused INSERT may have stored part of its rows before failing (each partition's block is
// written on its own), and the halves are inserted under tokens of their own, which would not
// deduplicate against that part. So the rows of a half that are already stored are left out
// (store.StoredIDs) right before its INSERT, and a half's token also names the rows it carries:
// the same remainder retried gets the same token, a different remainder (more was stored
// meanwhile) a different one, and the token dedup never drops a row that is not stored.
type piece struct {
	path     string // "" for the whole batch; "g3" for a group; "g3.0.1" for halves
	recs     []*event.Record
	parts    []store.Partition // the partitions of recs, one per record
	filtered bool              // a half: leave out what is stored before inserting
}

// groups cuts recs (in stream sequence order) into the batch's first pieces, of at most
// maxParts partitions each (store.MaxPartitionsPerInsert; less in tests).
func groups(recs []*event.Record, days func(org string) uint16, maxParts int) []piece {
	parts := make([]store.Partition, len(recs))
	distinct := map[store.Partition]bool{}
	for i, r := range recs {
		parts[i] = store.PartitionOf(r.Event.OccurredAt, days(r.OrganizationID))
		distinct[parts[i]] = true
	}
	if len(distinct) <= maxParts {
		return []piece{{recs: recs, parts: parts}}
	}
	sorted := make([]store.Partition, 0, len(distinct))
	for p := range distinct {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, store.Partition.Compare)
	group := map[store.Partition]int{}
	for i, p := range sorted {
		group[p] = i / maxParts
	}
	out := make([]piece, (len(sorted)+maxParts-1)/maxParts)
	for i := range out {
		out[i].path = fmt.Sprintf("g%d", i)
	}
	for i, r := range recs {
		g := &out[group[parts[i]]]
		g.recs = append(g.recs, r)
		g.parts = append(g.parts, parts[i])
	}
	return out
}

// halves splits p (of two records or more) in two: at a partition boundary while p spans several
// partitions (the half of its partitions in partition order, whole), else at the middle record.
func (p piece) halves() [2]piece {
	distinct := slices.Clone(p.parts)
	slices.SortFunc(distinct, store.Partition.Compare)
	distinct = slices.Compact(distinct)
	var a, b piece
	a.path, b.path = childPath(p.path, 0), childPath(p.path, 1)
	a.filtered, b.filtered = true, true
	if len(distinct) > 1 {
		cut := distinct[len(distinct)/2] // the first partition of the second half
		for i, r := range p.recs {
			h := &a
			if p.parts[i].Compare(cut) >= 0 {
				h = &b
			}
			h.recs = append(h.recs, r)
			h.parts = append(h.parts, p.parts[i])
		}
		return [2]piece{a, b}
	}
	mid := len(p.recs) / 2
	a.recs, a.parts = p.recs[:mid], p.parts[:mid]
	b.recs, b.parts = p.recs[mid:], p.parts[mid:]
	return [2]piece{a, b}
}

func childPath(path string, i int) string {
	if path == "" {
		return fmt.Sprint(i)
	}
	return fmt.Sprintf("%s.%d", path, i)
}

// pieceToken is the deduplication token of an INSERT of recs as piece path of the batch whose
// token is batch. The whole batch keeps the batch's token. Other pieces get the batch token and a
// digest of the path and, for halves, of the ids inserted (see piece): under 128 characters.
func pieceToken(batch, path string, filtered bool, recs []*event.Record) string {
	if path == "" {
		return batch
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s|", path)
	if filtered {
		for _, r := range recs {
			fmt.Fprintf(h, "%s,", r.ID)
		}
	}
	return batch + ":" + hex.EncodeToString(h.Sum(nil)[:12])
}
