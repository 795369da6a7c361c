package batcher

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
)

// tokenPattern is what store.Insert accepts as a dedup token.
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9:._-]{1,128}$`)

func TestBatchTokenIsDeterministicAndDistinct(t *testing.T) {
	w := &Writer{streamEpoch: 1764000000}
	token := w.batchToken(runsOf([]uint64{1, 2, 3, 7}))
	assert.Regexp(t, tokenPattern, token)
	assert.Contains(t, token, "valid:1764000000:1-7:")
	tests := []struct {
		name string
		w    *Writer
		seqs []uint64
		same bool
	}{
		{"same sequences again (a redelivery)", w, []uint64{1, 2, 3, 7}, true},
		{"one sequence fewer", w, []uint64{1, 2, 3}, false},
		{"same range, other sequences inside", w, []uint64{1, 4, 5, 7}, false},
		{"a recreated stream", &Writer{streamEpoch: 1764000001}, []uint64{1, 2, 3, 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.w.batchToken(runsOf(tt.seqs))
			assert.Regexp(t, tokenPattern, got)
			assert.Equal(t, tt.same, got == token)
		})
	}
	// The largest sequences still give an accepted token.
	assert.Regexp(t, tokenPattern, w.batchToken([][2]uint64{{1<<64 - 3, 1<<64 - 1}}))
}

func TestRunsAndContains(t *testing.T) {
	runs := runsOf([]uint64{3, 4, 5, 9, 11, 12})
	assert.Equal(t, [][2]uint64{{3, 5}, {9, 9}, {11, 12}}, runs)
	r := &batchRecord{Runs: runs}
	for seq, want := range map[uint64]bool{2: false, 3: true, 5: true, 6: false, 9: true, 10: false, 12: true, 13: false} {
		assert.Equal(t, want, r.contains(seq), "seq %d", seq)
	}
	assert.Equal(t, uint64(3), r.first())
	assert.Equal(t, uint64(12), r.last())
}
