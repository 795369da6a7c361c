package config

import (
	"net"
	"net/url"
	"strconv"
)

// Addr returns the variable as a listen address ("host:port" or ":port", port 0 to 65535), or def.
func (e *Env) Addr(name, def string) string {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	_, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 0 || n > 65535 {
		e.fail(name, v, "must be a listen address such as :9090 or 127.0.0.1:9090")
		return def
	}
	return v
}

// BaseURL returns the variable as an absolute http(s) URL without query or fragment, with any
// trailing slash removed, or def.
func (e *Env) BaseURL(name, def string) string {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		e.fail(name, v, "must be an absolute http or https URL such as https://audit.example.com")
		return def
	}
	for len(v) > 0 && v[len(v)-1] == '/' {
		v = v[:len(v)-1]
	}
	return v
}

// Fail records that the variable's value v is unusable, saying what it must be instead: for checks
// a caller makes beyond the typed readers.
func (e *Env) Fail(name, v, want string) { e.fail(name, v, want) }
