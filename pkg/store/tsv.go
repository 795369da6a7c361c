package store

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"time"
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

// appendTSV appends v in the engine's TabSeparated input format: strings escaped, arrays and maps
// as ['a','b'] and {'k':'v'} literals, times as 2006-01-02 15:04:05.000 (UTC).
func appendTSV(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return appendEscaped(b, x), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case time.Time:
		return x.UTC().AppendFormat(b, "2006-01-02 15:04:05.000"), nil
	case []string:
		b = append(b, '[')
		for i, s := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, s)
		}
		return append(b, ']'), nil
	case map[string]string:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, k)
			b = append(b, ':')
			b = appendQuoted(b, x[k])
		}
		return append(b, '}'), nil
	}
	return b, fmt.Errorf("cannot encode %T", v)
}

// appendEscaped escapes a string field: backslash, tab, line feed, carriage return and NUL.
func appendEscaped(b []byte, s string) []byte { return escapeInto(b, s, false) }

// appendQuoted writes a quoted string literal, as array and map values hold them.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '\'')
	return append(escapeInto(b, s, true), '\'')
}

func escapeInto(b []byte, s string, quoted bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case 0:
			b = append(b, '\\', '0')
		case '\'':
			if quoted {
				b = append(b, '\\')
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return b
}
