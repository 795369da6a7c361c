package natsx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/logbookhq/logbook/pkg/config"
	"github.com/logbookhq/logbook/pkg/natsx"
)

func runServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.ClientURL()
}

func connectFromEnv(vars map[string]string) error {
	nc, _, err := natsx.ConnectFromEnv(context.Background(), config.FromMap(vars), "auth-test")
	if err == nil {
		nc.Close()
	}
	return err
}

// The service binaries authenticate with LOGBOOK_NATS_USER and LOGBOOK_NATS_PASSWORD; without
// them, or with a wrong password, the server refuses them.
func TestConnectFromEnvWithUserAndPassword(t *testing.T) {
	url := runServer(t, &server.Options{Username: "logbook", Password: "s3cret-s3cret"})

	assert.ErrorIs(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url}), nats.ErrAuthorization)
	assert.ErrorIs(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url,
		"LOGBOOK_NATS_USER": "logbook", "LOGBOOK_NATS_PASSWORD": "guess"}), nats.ErrAuthorization)
	assert.NoError(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url,
		"LOGBOOK_NATS_USER": "logbook", "LOGBOOK_NATS_PASSWORD": "s3cret-s3cret"}))
}

// LOGBOOK_NATS_NKEY names a seed file; the server knows only the public key.
func TestConnectFromEnvWithNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "service.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	url := runServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	assert.ErrorIs(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url}), nats.ErrAuthorization)
	assert.NoError(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url, "LOGBOOK_NATS_NKEY": seedFile}))
}

// LOGBOOK_NATS_TLS_CA makes the client trust a private CA; without it the server's certificate is
// refused. LOGBOOK_NATS_TLS_CERT/KEY present a client certificate to a server that verifies them.
func TestConnectFromEnvWithTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.certPEM, 0o600))
	serverCert := ca.issue(t, "nats", x509.ExtKeyUsageServerAuth)
	clientCert := ca.issue(t, "logbook-ingest", x509.ExtKeyUsageClientAuth)
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	require.NoError(t, os.WriteFile(certFile, clientCert.certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, clientCert.keyPEM, 0o600))
	pair, err := tls.X509KeyPair(serverCert.certPEM, serverCert.keyPEM)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.certPEM)
	url := runServer(t, &server.Options{TLS: true, TLSVerify: true, TLSTimeout: 2, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}})

	assert.Error(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url}), "an unknown authority")
	assert.Error(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url, "LOGBOOK_NATS_TLS_CA": caFile}), "no client certificate")
	assert.NoError(t, connectFromEnv(map[string]string{"LOGBOOK_NATS_URL": url, "LOGBOOK_NATS_TLS_CA": caFile,
		"LOGBOOK_NATS_TLS_CERT": certFile, "LOGBOOK_NATS_TLS_KEY": keyFile}))
}

// Incomplete or conflicting credentials stop a service at start-up, naming the variable.
func TestAuthFromEnvRefusesBadSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "seed")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"user without password", map[string]string{"LOGBOOK_NATS_USER": "logbook"}, "LOGBOOK_NATS_PASSWORD"},
		{"password without user", map[string]string{"LOGBOOK_NATS_PASSWORD": "s3cret"}, "LOGBOOK_NATS_USER"},
		{"two ways", map[string]string{"LOGBOOK_NATS_USER": "logbook", "LOGBOOK_NATS_PASSWORD": "s3cret", "LOGBOOK_NATS_NKEY": file}, "not several"},
		{"missing file", map[string]string{"LOGBOOK_NATS_CREDS": "/nonexistent/logbook.creds"}, "LOGBOOK_NATS_CREDS"},
		{"cert without key", map[string]string{"LOGBOOK_NATS_TLS_CERT": file}, "LOGBOOK_NATS_TLS_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := config.FromMap(tt.vars)
			natsx.AuthFromEnv(env)
			require.Error(t, env.Err())
			assert.Contains(t, env.Err().Error(), tt.want)
		})
	}
}

type certPair struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	certPEM, keyPEM []byte
}

func newCA(t *testing.T) *certPair {
	t.Helper()
	return makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "logbook test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

func (ca *certPair) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) *certPair {
	t.Helper()
	return makeCert(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}, ca)
}

func makeCert(t *testing.T, tmpl *x509.Certificate, parent *certPair) *certPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return &certPair{cert: cert, key: key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}
}
