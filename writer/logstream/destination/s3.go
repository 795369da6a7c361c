package destination

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/store"
)

// s3Sender writes each batch as one gzip NDJSON object per organization (SigV4-signed PUTs
// through aws-sdk-go-v2) at
//
//	<prefix>/org_id=<org>/YYYY/MM/DD/HH/<stream id>_<first event id>_<last event id>.ndjson.gz
//
// the time being the first event's received time (UTC). The key derives from the batch's
// events, so a retried batch writes the same key; the PUT is create-only (If-None-Match: *), and
// 412 — the object exists — means an earlier attempt landed: success. Content-MD5 is sent.
type s3Sender struct {
	client *s3.Client
	bucket string
	prefix string
}

func newS3(d logstream.Destination, sec logstream.Secrets, hc *http.Client) (*s3Sender, error) {
	creds := aws.Credentials{AccessKeyID: d.AccessKeyID, SecretAccessKey: sec.SecretAccessKey, Source: "logbook log stream"}
	opts := s3.Options{
		Region:      d.Region,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		HTTPClient:  hc,
		// One attempt per Send: the log-stream worker retries with its own backoff and bounds.
		RetryMaxAttempts: 1,
		UsePathStyle:     d.PathStyle,
		// Content-MD5 is computed here; no trailing checksums, which S3-compatible servers vary on.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if d.Endpoint != "" {
		opts.BaseEndpoint = aws.String(d.Endpoint)
	}
	return &s3Sender{client: s3.New(opts), bucket: d.Bucket, prefix: strings.Trim(d.Prefix, "/")}, nil
}

func (s *s3Sender) Send(ctx context.Context, b *Batch) error {
	// One object per organization: an environment-wide stream's batch may hold several.
	start := 0
	for i := 1; i <= len(b.Events); i++ {
		if i < len(b.Events) && b.Events[i].OrganizationID == b.Events[start].OrganizationID {
			continue
		}
		if err := s.put(ctx, b.StreamID, b.Events[start:i]); err != nil {
			return err
		}
		start = i
	}
	return nil
}

func (s *s3Sender) put(ctx context.Context, streamID string, events []store.Event) error {
	first, last := &events[0], &events[len(events)-1]
	t := first.ReceivedAt.UTC()
	key := fmt.Sprintf("org_id=%s/%s/%s_%s_%s.ndjson.gz", first.OrganizationID, t.Format("2006/01/02/15"), streamID, first.ID, last.ID)
	if s.prefix != "" {
		key = s.prefix + "/" + key
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	for i := range events {
		_, _ = zw.Write(events[i].Object())
		_, _ = zw.Write([]byte{'\n'})
	}
	if err := zw.Close(); err != nil {
		return &Error{Msg: "s3: " + err.Error()}
	}
	sum := md5.Sum(body.Bytes())
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(key),
		Body:            bytes.NewReader(body.Bytes()),
		ContentLength:   aws.Int64(int64(body.Len())),
		ContentMD5:      aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ContentType:     aws.String("application/x-ndjson"),
		ContentEncoding: aws.String("gzip"),
		IfNoneMatch:     aws.String("*"),
	})
	if err == nil {
		return nil
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		return &Error{Msg: "s3: " + err.Error()}
	}
	status := re.HTTPStatusCode()
	if status == http.StatusPreconditionFailed {
		return nil // an earlier attempt stored this very object
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	e := &Error{Status: status, Msg: fmt.Sprintf("s3 answered %d: %s", status, code)}
	switch {
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		if h := re.Response.Header.Get("Retry-After"); h != "" {
			e.RetryAfter = retryAfter(h, time.Now())
		}
	case status == http.StatusRequestEntityTooLarge:
		e.TooLarge = true
	default:
		e.Refused = true
	}
	return e
}
