package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTSVRowsDecodeEscapes(t *testing.T) {
	r := &tsvRows{data: []byte("a\\tb\\\\c\\nd\t42\t7\n\t-1\t0\n")}
	var s string
	var i int64
	var u uint64
	require.True(t, r.Next())
	require.NoError(t, r.Scan(&s, &i, &u))
	assert.Equal(t, "a\tb\\c\nd", s)
	assert.Equal(t, int64(42), i)
	assert.Equal(t, uint64(7), u)
	require.True(t, r.Next())
	require.NoError(t, r.Scan(&s, &i, &u))
	assert.Equal(t, "", s)
	assert.Equal(t, int64(-1), i)
	assert.False(t, r.Next())
	var m map[string]string
	r = &tsvRows{data: []byte("x\n")}
	require.True(t, r.Next())
	assert.Error(t, r.Scan(&m), "only scalar columns")
	assert.Error(t, r.Scan(&s, &s), "column count must match")
}
