package validate

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Bodies are read strictly, so that what is stored is what was sent: encoding/json keeps the last
// of duplicate object member names and replaces invalid UTF-8 with U+FFFD, so a body could say two
// things and the record one of them. encoding/json/jsontext (the token layer of encoding/json/v2,
// built by default since Go 1.27: its jsonv2 experiment is on without GOEXPERIMENT) refuses both by
// default, in names and values, at every depth.

// CheckJSON reports whether body is exactly one strict JSON value (ErrMalformed, wrapped, when it
// is not): no duplicate member names, valid UTF-8, nothing after the value.
func CheckJSON(body []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if err := dec.SkipValue(); err != nil {
		return malformed(err)
	}
	return atEOF(dec)
}

// decodeObject decodes body, one strict JSON object, into map[string]any, keeping numbers as the
// producer wrote them (json.Number).
func decodeObject(body []byte) (map[string]any, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if k := dec.PeekKind(); k != jsontext.KindBeginObject && k != jsontext.KindInvalid {
		return nil, fmt.Errorf("%w: the body must be a JSON object", ErrMalformed)
	}
	v, err := readValue(dec)
	if err != nil {
		return nil, malformed(err)
	}
	if err := atEOF(dec); err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// readValue reads the next value: objects as map[string]any, arrays as []any, numbers as
// json.Number, and strings, booleans and null as encoding/json would.
func readValue(dec *jsontext.Decoder) (any, error) {
	switch dec.PeekKind() {
	case jsontext.KindBeginObject:
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		m := map[string]any{}
		for dec.PeekKind() != jsontext.KindEndObject {
			tok, err := dec.ReadToken() // a duplicate name is an error here
			if err != nil {
				return nil, err
			}
			name := tok.String() // before the next read voids tok
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			m[name] = v
		}
		_, err := dec.ReadToken()
		return m, err
	case jsontext.KindBeginArray:
		if _, err := dec.ReadToken(); err != nil {
			return nil, err
		}
		a := []any{}
		for dec.PeekKind() != jsontext.KindEndArray {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.ReadToken()
		return a, err
	case jsontext.KindNumber:
		raw, err := dec.ReadValue()
		return json.Number(raw), err
	}
	tok, err := dec.ReadToken() // a string, true, false, null, or the error PeekKind saw
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case jsontext.KindString:
		return tok.String(), nil
	case jsontext.KindTrue, jsontext.KindFalse:
		return tok.Bool(), nil
	}
	return nil, nil
}

func atEOF(dec *jsontext.Decoder) error {
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrMalformed)
	}
	return nil
}

// malformed wraps a jsontext error as ErrMalformed with a message fit for the producer.
func malformed(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: unexpected end of JSON input", ErrMalformed)
	}
	return fmt.Errorf("%w: %s", ErrMalformed, strings.TrimPrefix(err.Error(), "jsontext: "))
}
