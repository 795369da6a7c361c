package natsx_test

import (
	"bytes"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// proxy forwards TCP connections to a NATS server. Silence stops forwarding what the server sends,
// with every connection left open: to the client, the server (JetStream included) stops answering,
// as it does while a stream has no leader. Answer resumes.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	resume *sync.Cond
	silent bool
	after  []byte // when set, Silence once data containing it has been forwarded
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target}
	p.resume = sync.NewCond(&p.mu)
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.Answer()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(server, client, false) }()
			go func() { defer conns.Done(); p.pipe(client, server, true) }()
		}
	}()
	return p
}

func (p *proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// pipe copies src to dst; fromServer marks the direction Silence stops.
func (p *proxy) pipe(dst, src net.Conn, fromServer bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	var tail []byte // the end of the previous read, so a pattern split across reads is seen
	for {
		n, err := src.Read(buf)
		if n > 0 && fromServer {
			p.mu.Lock()
			for p.silent {
				p.resume.Wait()
			}
			if p.after != nil && bytes.Contains(append(tail, buf[:n]...), p.after) {
				p.after, p.silent = nil, true
			}
			tail = append(tail[:0], buf[max(0, n-64):n]...)
			p.mu.Unlock()
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Silence stops forwarding the server's answers.
func (p *proxy) Silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.silent = true
}

// SilenceAfter silences the server right after it sent data containing pattern.
func (p *proxy) SilenceAfter(pattern string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.after = []byte(pattern)
}

// Answer forwards the server's answers again, the held ones first.
func (p *proxy) Answer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.silent, p.after = false, nil
	p.resume.Broadcast()
}
