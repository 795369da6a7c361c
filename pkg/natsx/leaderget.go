package natsx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/logbookhq/logbook/pkg/event"
)

// GetLast reads the last message stored on subject in stream, answered by the stream's leader
// (the JetStream API's STREAM.MSG.GET), never by a replica. Key-value buckets allow direct gets,
// which nats.go's Get uses and which any replica answers from its own copy: a follower, or a
// node restarted and still catching up (it answers once 90 % synchronised), can lack a record the
// leader acknowledged. Where a missing record changes what is done, read it here. A subject with
// nothing on it is jetstream.ErrMsgNotFound; so is a key-value delete or purge marker there.
func GetLast(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	return leaderGet(ctx, js, stream, subject, msgGetRequest{LastFor: subject})
}

// GetSeq reads the message at sequence seq of stream from the stream's leader (see GetLast).
func GetSeq(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) (*jetstream.RawStreamMsg, error) {
	return leaderGet(ctx, js, stream, fmt.Sprintf("sequence %d", seq), msgGetRequest{Seq: seq})
}

// apiTimeout bounds a JetStream API request made without a deadline (jetstream.New's default).
const apiTimeout = 10 * time.Second

type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

func leaderGet(ctx context.Context, js jetstream.JetStream, stream, subject string, r msgGetRequest) (*jetstream.RawStreamMsg, error) {
	req, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok { // as nats.go's own API calls: a request nobody answers ends
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiTimeout)
		defer cancel()
	}
	reply, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s from stream %s: %w", subject, stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("failed to read %s from stream %s: %w", subject, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("failed to read %s from stream %s: %w", subject, stream, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("failed to read %s from stream %s: %w", subject, stream, jetstream.ErrInvalidJetStreamResponse)
	}
	m := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence,
		Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("failed to read %s from stream %s: %w", subject, stream, err)
		}
	}
	if op := m.Header.Get("KV-Operation"); r.LastFor != "" && (op == "DEL" || op == "PURGE") {
		return nil, jetstream.ErrMsgNotFound
	}
	return m, nil
}

// CreateOrGet stores value under key in bucket unless the key exists, and returns what the key
// holds: value, or the value another process stored first, read from the bucket's leader (GetLast)
// because a replica can lack a key created a moment before (nats.go's Get would answer "not found").
func CreateOrGet(ctx context.Context, js jetstream.JetStream, bucket, key string, value []byte) ([]byte, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("failed to open bucket %s: %w", bucket, err)
	}
	_, err = kv.Create(ctx, key, value)
	if err == nil {
		return value, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("failed to store %s in bucket %s: %w", key, bucket, err)
	}
	m, err := GetLast(ctx, js, KVStream(bucket), KVSubject(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s from bucket %s: %w", key, bucket, err)
	}
	return m.Data, nil
}

// SharedSecret returns the secret named name in the secrets bucket (event.BucketSecrets), at
// least 32 bytes kept hex-encoded: the first process to need it generates 32 random bytes and
// stores them (create-if-absent, so processes starting together agree), and every process then
// reads the same secret (CreateOrGet).
func SharedSecret(ctx context.Context, js jetstream.JetStream, name string) ([]byte, error) {
	var fresh [32]byte
	if _, err := rand.Read(fresh[:]); err != nil {
		return nil, fmt.Errorf("failed to generate secret %s: %w", name, err)
	}
	raw, err := CreateOrGet(ctx, js, event.BucketSecrets, name, []byte(hex.EncodeToString(fresh[:])))
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(string(raw))
	if err != nil || len(key) < len(fresh) {
		return nil, fmt.Errorf("secret %s in bucket %s is malformed", name, event.BucketSecrets)
	}
	return key, nil
}
