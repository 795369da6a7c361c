package logstream_test

import (
	"crypto/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/logstream"
)

func TestSealedSecretsOpenOnlyForTheirOwner(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s, err := logstream.NewSealer(key)
	require.NoError(t, err)
	in := logstream.Secrets{Token: "hec-token-value", Headers: map[string]string{"Authorization": "Bearer abc"}}
	sealed, err := s.Seal("log_stream_a", &in)
	require.NoError(t, err)
	assert.NotContains(t, sealed, "hec-token-value")
	assert.NotContains(t, sealed, "Bearer")

	var out logstream.Secrets
	require.NoError(t, s.Open("log_stream_a", sealed, &out))
	assert.Equal(t, in, out)
	assert.Error(t, s.Open("log_stream_b", sealed, &out), "a sealed value copied to another stream does not open")
	tampered := sealed[:len(sealed)-2] + strings.ToUpper(sealed[len(sealed)-2:len(sealed)-1]) + "A"
	assert.Error(t, s.Open("log_stream_a", tampered, &out))
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	s2, _ := logstream.NewSealer(other)
	assert.Error(t, s2.Open("log_stream_a", sealed, &out), "another key does not open it")
}

func TestValidate(t *testing.T) {
	secret := logstream.NewSigningSecret()
	tests := []struct {
		name   string
		s      logstream.Stream
		sec    logstream.Secrets
		fields []string
	}{
		{"http ok", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "http", URL: "https://x.example/h"}},
			logstream.Secrets{SigningSecret: secret}, nil},
		{"http with credentials in the URL", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "http", URL: "https://u:p@x.example/"}},
			logstream.Secrets{SigningSecret: secret}, []string{"destination.url"}},
		{"splunk without token", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "splunk", URL: "https://s:8088"}},
			logstream.Secrets{}, []string{"destination.token"}},
		{"s3 missing bucket and key", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "s3", Region: "us-east-1"}},
			logstream.Secrets{}, []string{"destination.bucket", "destination.access_key_id", "destination.secret_access_key"}},
		{"a reserved header", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "otlp", URL: "http://c:4318"}},
			logstream.Secrets{Headers: map[string]string{"Content-Type": "x"}}, []string{"destination.headers"}},
		{"bad organization and state", logstream.Stream{OrganizationID: "org.a", Name: "a", State: "on", Destination: logstream.Destination{Type: "datadog"}},
			logstream.Secrets{APIKey: "k"}, []string{"organization_id", "state"}},
		{"batch out of range", logstream.Stream{Name: "a", State: "paused", Destination: logstream.Destination{Type: "http", URL: "http://x"},
			Batch: logstream.Batch{MaxEvents: 20_000, MaxBytes: 10}}, logstream.Secrets{SigningSecret: secret}, []string{"batch.max_events", "batch.max_bytes"}},
		{"unknown type", logstream.Stream{Name: "a", State: "active", Destination: logstream.Destination{Type: "ftp"}}, logstream.Secrets{}, []string{"destination.type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := logstream.Validate(&tt.s, &tt.sec)
			if tt.fields == nil {
				require.NoError(t, err)
				return
			}
			var ve *logstream.ValidationError
			require.ErrorAs(t, err, &ve)
			var got []string
			for _, f := range ve.Errors {
				got = append(got, f.Field)
			}
			assert.ElementsMatch(t, tt.fields, got)
		})
	}
}
