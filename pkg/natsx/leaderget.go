package natsx

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
