package event

import (
	jsonv1 "encoding/json"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
)

// recordOptions decode a Record with encoding/json/v2 (faster than the v1 Decoder, which every
// hop after the gateway ran once per event) while keeping the v1 Decoder's UseNumber: a number
// among the metadata values becomes a json.Number holding the digits the producer sent.
var recordOptions = json.WithUnmarshalers(json.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *any) error {
	if dec.PeekKind() != '0' {
		return errors.ErrUnsupported // decoded as usual
	}
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	*v = jsonv1.Number(tok.String())
	return nil
}))

func decodeUseNumber(data []byte, v any) error {
	return json.Unmarshal(data, v, recordOptions)
}
