package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockFile is the file in the data folder a running Logbook holds an exclusive advisory lock on.
const lockFile = "logbook.lock"

// ErrDataDirInUse is returned by Start when another Logbook (another process, or another App in
// this one) holds the data folder.
var ErrDataDirInUse = errors.New("data folder in use")

// dataLock is a held lock on a data folder: an exclusive flock(2) on DataDir/logbook.lock. The
// kernel releases it when the process exits however it exits, so a crash never leaves a stale
// lock behind; the file's content (the holder's pid) only serves the error message.
type dataLock struct {
	f *os.File
}

// lockDataDir takes the lock on dir, waiting up to wait for a holder to let go (0: not at all),
// polling and saying once in the log that it waits. The error names the folder and the holder.
func lockDataDir(ctx context.Context, dir string, wait time.Duration, log *slog.Logger) (*dataLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve data folder %s: %w", dir, err)
	}
	path := filepath.Join(abs, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("failed to open lock file %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("failed to lock data folder %s: %w", abs, err)
		}
		holder := lockHolder(path)
		if !time.Now().Before(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s is used by another Logbook (%s); stop it or set LOGBOOK_DATA_DIR to another folder",
				ErrDataDirInUse, abs, holder)
		}
		if !logged {
			log.Warn("data folder is locked by another Logbook; waiting for it to stop",
				"data_dir", abs, "holder", holder, "wait", wait.String())
			logged = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("stopped waiting for the lock on data folder %s: %w", abs, ctx.Err())
		case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
		}
	}
	// Held: record who holds it, for the next one's message.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d, since %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))), 0)
	}
	return &dataLock{f: f}, nil
}

// lockHolder describes the holder from the lock file's content.
func lockHolder(path string) string {
	b, err := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if err != nil || s == "" || !strings.HasPrefix(s, "pid ") {
		return "pid unknown"
	}
	if pid, _, _ := strings.Cut(strings.TrimPrefix(s, "pid "), ","); pid != "" {
		if _, err := strconv.Atoi(pid); err != nil {
			return "pid unknown"
		}
	}
	return s
}

// release lets go of the lock. Safe on nil and more than once.
func (l *dataLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	_ = f.Truncate(0)
	return f.Close() // closing the descriptor releases the flock
}
