package store

import (
	"bytes"
	"fmt"
	"strconv"
	"unsafe"
)

// tsvRows scans the engine's TabSeparated output: one line per row, columns separated by tabs,
// with tab, line feed, backslash and a few others escaped by a backslash. It is several times
// cheaper to decode than a JSON format, which matters for exports of millions of rows. Only
// scalar columns can be scanned (strings and integers): every query the store runs selects those.
type tsvRows struct {
	data []byte
	cur  [][]byte
	err  error
}

func (r *tsvRows) Next() bool {
	if r.err != nil || len(r.data) == 0 {
		return false
	}
	line := r.data
	if i := bytes.IndexByte(r.data, '\n'); i >= 0 {
		line, r.data = r.data[:i], r.data[i+1:]
	} else {
		r.data = nil
	}
	r.cur = r.cur[:0]
	for {
		i := bytes.IndexByte(line, '\t')
		if i < 0 {
			r.cur = append(r.cur, line)
			return true
		}
		r.cur, line = append(r.cur, line[:i]), line[i+1:]
	}
}

func (r *tsvRows) Scan(dest ...any) error {
	if len(dest) != len(r.cur) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(r.cur))
	}
	for i, d := range dest {
		field := r.cur[i]
		var err error
		switch p := d.(type) {
		case *string:
			*p = unescapeTSV(field)
		case *int64:
			*p, err = strconv.ParseInt(string(field), 10, 64)
		case *int:
			*p, err = strconv.Atoi(string(field))
		case *uint64:
			err = parseUint(field, p)
		case *uint32:
			err = parseUint(field, p)
		case *uint16:
			err = parseUint(field, p)
		case *uint8:
			err = parseUint(field, p)
		case *float64:
			*p, err = strconv.ParseFloat(string(field), 64)
		default:
			return fmt.Errorf("scan column %d: cannot scan into %T", i, d)
		}
		if err != nil {
			return fmt.Errorf("scan column %d: %w", i, err)
		}
	}
	return nil
}

func (r *tsvRows) Err() error   { return r.err }
func (r *tsvRows) Close() error { return nil }

func parseUint[T uint8 | uint16 | uint32 | uint64](field []byte, p *T) error {
	v, err := strconv.ParseUint(string(field), 10, int(unsafe.Sizeof(*p))*8)
	*p = T(v)
	return err
}

// unescapeTSV reverses the engine's TabSeparated escaping.
func unescapeTSV(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 == len(b) {
			out = append(out, c)
			continue
		}
		i++
		switch b[i] {
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case '0':
			out = append(out, 0)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'a':
			out = append(out, '\a')
		case 'v':
			out = append(out, '\v')
		default: // \\ \' and anything else stand for themselves
			out = append(out, b[i])
		}
	}
	return string(out)
}
