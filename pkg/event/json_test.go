package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// sampleRecord is a record as the gateway writes it, with every kind of metadata value.
var sampleRecord = []byte(`{"id":"01JDXA7Q3Z7K1M2N3P4Q5R6S7T","organization_id":"org_01HBENCHACME","received_at":"2026-12-02T10:11:12.345Z",` +
	`"event":{"action":"user.signed_in","occurred_at":"2026-12-02T10:11:12.3Z","version":2,` +
	`"actor":{"id":"user_01","type":"user","name":"Jane Q. Müller","metadata":{"role":"admin","age":42,"big":123456789012345678901234567890,"ok":true}},` +
	`"targets":[{"id":"team_1","type":"team"},{"id":"doc_9","type":"document","name":"Q3 plan","metadata":{"pages":1.5e3,"draft":false}}],` +
	`"context":{"location":"203.0.113.9","user_agent":"Mozilla/5.0 \"quoted\" \u00e9\u2028"},` +
	`"metadata":{"n":-0.000001,"s":"x\ny\t\\","e":""}},"schema":{"scope":"org","version":2}}`)

// decodeV1 is the decoder Unmarshal used before (encoding/json's Decoder with UseNumber): the
// record must decode to the same value.
func decodeV1(data []byte) (*Record, error) {
	var r Record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return &r, dec.Decode(&r)
}

func TestUnmarshalKeepsNumbersAndMatchesTheV1Decoder(t *testing.T) {
	for _, data := range [][]byte{sampleRecord,
		[]byte(`{"id":"a","organization_id":"org_1","received_at":"2026-01-01T00:00:00Z","event":{"action":"a","occurred_at":"2026-01-01T00:00:00Z","actor":{"id":"u","type":"user"},"targets":[],"context":{"location":""}}}`),
		[]byte(`{"id":"a","organization_id":"org_1","received_at":"2026-01-01T00:00:00Z","event":{"action":"a","occurred_at":"2026-01-01T00:00:00Z","actor":{"id":"u","type":"user","metadata":{}},"targets":null,"context":{"location":"x"},"metadata":null}}`),
	} {
		got, err := Unmarshal(data)
		if err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		want, err := decodeV1(data)
		if err != nil {
			t.Fatalf("v1: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Unmarshal differs from the v1 decoder:\n got %#v\nwant %#v", got, want)
		}
	}
	got, _ := Unmarshal(sampleRecord)
	if n, ok := got.Event.Actor.Metadata["big"].(json.Number); !ok || n != "123456789012345678901234567890" {
		t.Fatalf("a number keeps its digits: got %#v", got.Event.Actor.Metadata["big"])
	}
	for _, bad := range []string{`{`, `[]`, `{"id":"a","organization_id":"org 1"}`, `{"organization_id":"org_1"}`, `nope`} {
		if _, err := Unmarshal([]byte(bad)); err == nil {
			t.Fatalf("Unmarshal(%s) succeeded", bad)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	b.Run("now", func(b *testing.B) {
		for b.Loop() {
			if _, err := Unmarshal(sampleRecord); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("v1-decoder", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeV1(sampleRecord); err != nil {
				b.Fatal(err)
			}
		}
	})
}
