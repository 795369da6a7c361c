package logstream_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
	"github.com/logbookhq/logbook/pkg/storetest"
)

// versitygw is a real S3-compatible server (github.com/versity/versitygw) that verifies SigV4,
// run on loopback with a posix backend; `make versitygw` builds it into the per-user cache.
type versitygw struct {
	t              *testing.T
	bin, dir, addr string
	cmd            *exec.Cmd
}

const (
	s3Access = "logbook-test-access"
	s3Secret = "logbook-test-secret-0123456789"
	s3Bucket = "audit-logs"
)

func startVersitygw(t *testing.T) *versitygw {
	t.Helper()
	bin := os.Getenv("LOGBOOK_VERSITYGW")
	if bin == "" {
		home, _ := os.UserCacheDir()
		bin = filepath.Join(home, "logbook", "versitygw", "v1.8.0", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw not found at %s: run `make versitygw` (builds it from its Go module into the cache)", bin)
	}
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, s3Bucket), 0o755))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	g := &versitygw{t: t, bin: bin, dir: dir, addr: addr}
	g.start()
	t.Cleanup(g.kill)
	return g
}

func (g *versitygw) start() {
	g.cmd = exec.Command(g.bin, "--port", g.addr, "--access", s3Access, "--secret", s3Secret, "posix", g.dir)
	g.cmd.Stdout, g.cmd.Stderr = io.Discard, io.Discard
	require.NoError(g.t, g.cmd.Start())
	require.Eventually(g.t, func() bool {
		c, err := net.Dial("tcp", g.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "versitygw did not start")
}

// kill ends the server with SIGKILL.
func (g *versitygw) kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		_ = g.cmd.Process.Kill()
		_ = g.cmd.Wait()
		g.cmd = nil
	}
}

func (g *versitygw) client() *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://" + g.addr), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s3Access, SecretAccessKey: s3Secret}, nil
		}),
	})
}

type s3Object struct {
	key string
	ids []string
}

// objects reads back every object under prefix: gzip NDJSON of audit_log_event objects.
func (g *versitygw) objects(prefix string) []s3Object {
	ctx := context.Background()
	c := g.client()
	var out []s3Object
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		require.NoError(g.t, err)
		for _, o := range page.Contents {
			r, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: o.Key})
			require.NoError(g.t, err)
			body, err := io.ReadAll(r.Body)
			r.Body.Close()
			require.NoError(g.t, err)
			zr, err := gzip.NewReader(bytes.NewReader(body))
			require.NoError(g.t, err, "object %s is gzip", *o.Key)
			obj := s3Object{key: *o.Key}
			sc := bufio.NewScanner(zr)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var e struct {
					Object, ID string
				}
				require.NoError(g.t, json.Unmarshal(sc.Bytes(), &e))
				require.Equal(g.t, "audit_log_event", e.Object)
				obj.ids = append(obj.ids, e.ID)
			}
			out = append(out, obj)
		}
	}
	return out
}

func s3Destination(g *versitygw, prefix string) logstream.Destination {
	return logstream.Destination{Type: logstream.TypeS3, Bucket: s3Bucket, Region: "us-east-1", Prefix: prefix,
		Endpoint: "http://" + g.addr, PathStyle: true, AccessKeyID: s3Access}
}

// Events reach S3-compatible storage (a real server that checks SigV4) as gzip NDJSON objects under
// the time-partitioned prefix, through the server being killed and restarted mid-stream: every
// event in exactly one object (a retried batch rewrites its own key, refused by If-None-Match).
func TestS3StreamThroughServerOutage(t *testing.T) {
	g := startVersitygw(t)
	e := newEnv(t)
	org := storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org, Destination: s3Destination(g, "audit"),
		Batch: logstream.Batch{MaxEvents: 50, LingerMS: 50}}, logstream.Secrets{SecretAccessKey: s3Secret})
	e.startManager(t, testConfig())

	first, second := newRecords(org, 120), newRecords(org, 120)
	publishValid(t, e.js, first)
	require.Eventually(t, func() bool { return e.status(t, s.ID).Delivered >= 50 }, waitFor, tick)
	g.kill()
	publishValid(t, e.js, second)
	require.Eventually(t, func() bool { return e.status(t, s.ID).FailedAttempts >= 2 }, waitFor, tick)
	g.start()
	want := append(ids(first), ids(second)...)
	var objs []s3Object
	require.Eventually(t, func() bool {
		objs = g.objects("audit/")
		n := 0
		for _, o := range objs {
			n += len(o.ids)
		}
		return n >= len(want)
	}, waitFor, 100*time.Millisecond)
	slices.SortFunc(objs, func(a, b s3Object) int { return strings.Compare(a.ids[0], b.ids[0]) })
	var got []string
	for _, o := range objs {
		assert.Regexp(t, `^audit/org_id=`+org+`/\d{4}/\d{2}/\d{2}/\d{2}/`+s.ID+`_[0-9A-Z]+_[0-9A-Z]+\.ndjson\.gz$`, o.key)
		assert.True(t, strings.HasSuffix(o.key, "_"+o.ids[0]+"_"+o.ids[len(o.ids)-1]+".ndjson.gz"), "key names its events")
		got = append(got, o.ids...)
	}
	assert.Equal(t, want, got, "every event once, in order")
}

// A wrong secret is refused by the server's SigV4 check; the stream retries, reports the refusal,
// and delivers once the secret is corrected.
func TestS3StreamWrongSecretIsReported(t *testing.T) {
	g := startVersitygw(t)
	e := newEnv(t)
	org := storetest.NewOrg(t)
	s := e.createStream(t, logstream.Stream{OrganizationID: org, Destination: s3Destination(g, "bad"),
		Batch: logstream.Batch{MaxEvents: 10, LingerMS: 10}}, logstream.Secrets{SecretAccessKey: "not-the-secret"})
	e.startManager(t, testConfig())
	recs := newRecords(org, 5)
	publishValid(t, e.js, recs)
	require.Eventually(t, func() bool { return e.status(t, s.ID).FailedAttempts >= 2 }, waitFor, tick)
	st := e.status(t, s.ID)
	assert.Contains(t, st.LastError, "403")
	assert.Contains(t, st.LastError, "SignatureDoesNotMatch")
	assert.Empty(t, g.objects("bad/"))

	r, rev, err := e.st.Get(context.Background(), s.ID)
	require.NoError(t, err)
	require.NoError(t, e.st.Update(context.Background(), &r.Stream, &logstream.Secrets{SecretAccessKey: s3Secret}, rev))
	require.Eventually(t, func() bool { return len(g.objects("bad/")) == 1 }, waitFor, 100*time.Millisecond)
	assert.Equal(t, ids(recs), g.objects("bad/")[0].ids)
}
