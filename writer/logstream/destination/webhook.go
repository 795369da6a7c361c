package destination

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/logbookhq/logbook/pkg/logstream"
)

// Signer signs requests as Standard Webhooks 1.0 does, with its reference library: webhook-id,
// webhook-timestamp (unix seconds of this attempt) and webhook-signature
// "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", the key being the base64 after "whsec_". A
// receiver recomputes the HMAC over the exact body, compares in constant time, refuses timestamps
// more than 5 minutes off (replays) and drops ids it has seen (retries of a delivered batch).
type Signer struct {
	wh  *standardwebhooks.Webhook
	now func() time.Time
}

// NewSigner returns a Signer for secret ("whsec_…").
func NewSigner(secret string) (*Signer, error) {
	if !logstream.ValidSigningSecret(secret) {
		return nil, errors.New("signing secret must be whsec_ followed by base64 of 24 to 64 bytes")
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("bad signing secret: %w", err)
	}
	return &Signer{wh: wh, now: time.Now}, nil
}

// Sign sets the three headers of message id with body on h.
func (s *Signer) Sign(h http.Header, id string, body []byte) error {
	now := s.now()
	sig, err := s.wh.Sign(id, now, body)
	if err != nil {
		return fmt.Errorf("failed to sign: %w", err)
	}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", sig)
	return nil
}

// webhook posts a JSON array of audit_log_event objects, signed.
type webhook struct {
	url     string
	headers map[string]string
	signer  *Signer
	client  *http.Client
}

func newWebhook(d logstream.Destination, sec logstream.Secrets, client *http.Client) (*webhook, error) {
	signer, err := NewSigner(sec.SigningSecret)
	if err != nil {
		return nil, err
	}
	return &webhook{url: d.URL, headers: sec.Headers, signer: signer, client: client}, nil
}

func (w *webhook) Send(ctx context.Context, b *Batch) error {
	var body bytes.Buffer
	body.Grow(512 * len(b.Events))
	body.WriteByte('[')
	for i := range b.Events {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(b.Events[i].Object())
	}
	body.WriteByte(']')
	return PostSigned(ctx, w.client, w.url, w.signer, b.ID(), body.Bytes(), w.headers, b.StreamID)
}

// PostSigned posts a signed JSON body: a log-stream batch, or an alert firing to a webhook.
func PostSigned(ctx context.Context, client *http.Client, url string, signer *Signer, id string, body []byte, headers map[string]string, source string) error {
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Logbook-Source", source)
	if err := signer.Sign(h, id, body); err != nil {
		return &Error{Refused: true, Msg: "webhook: " + err.Error()}
	}
	resp, answer, err := post(ctx, client, url, body, h, "webhook")
	if err != nil {
		return err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return statusError(resp, answer, "webhook")
}
