// Package config reads Logbook's settings from environment variables. Every problem names the
// variable, and all problems are reported together.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env reads typed values from the environment, collecting errors.
type Env struct {
	lookup func(string) (string, bool)
	errs   []error
}

// FromEnv reads the process environment.
func FromEnv() *Env { return &Env{lookup: os.LookupEnv} }

// FromMap reads m instead of the environment (for tests).
func FromMap(m map[string]string) *Env {
	return &Env{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func (e *Env) get(name string) (string, bool) {
	v, ok := e.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (e *Env) fail(name, v, want string) {
	e.errs = append(e.errs, fmt.Errorf("%s=%q: %s", name, v, want))
}

// String returns the variable or def.
func (e *Env) String(name, def string) string {
	if v, ok := e.get(name); ok {
		return v
	}
	return def
}

// Int returns the variable as an integer in [lo, hi], or def.
func (e *Env) Int(name string, def, lo, hi int64) int64 {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		e.fail(name, v, fmt.Sprintf("must be an integer from %d to %d", lo, hi))
		return def
	}
	return n
}

// Duration returns the variable as a positive Go duration ("500ms", "2m"), or def.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.fail(name, v, "must be a positive duration such as 500ms or 2m")
		return def
	}
	return d
}

// DurationOrZero is Duration that also accepts 0 ("0" or "0s"), for waits that may be turned off.
func (e *Env) DurationOrZero(name string, def time.Duration) time.Duration {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.fail(name, v, "must be 0 or a positive duration such as 500ms or 2m")
		return def
	}
	return d
}

// Level returns the variable as a log level (debug, info, warn, error), or info.
func (e *Env) Level(name string) slog.Level {
	v, ok := e.get(name)
	if !ok {
		return slog.LevelInfo
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		e.fail(name, v, "must be debug, info, warn or error")
	}
	return l
}

// Require records an error when the variable is unset and returns its value.
func (e *Env) Require(name, why string) string {
	v, ok := e.get(name)
	if !ok {
		e.errs = append(e.errs, fmt.Errorf("%s is required: %s", name, why))
	}
	return v
}

// Err returns every problem found so far, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("bad configuration: %w", errors.Join(e.errs...))
}

// Logger returns a JSON logger on stderr at the level in LOGBOOK_LOG_LEVEL.
func (e *Env) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: e.Level("LOGBOOK_LOG_LEVEL")}))
}
