package testsupport

import (
	"bytes"
	"sync"
	"testing"
)

// LogWriter sends each write, one line of a log, to tb.Logf. Once the test
// ends (after the cleanups registered later than NewLogWriter have run)
// it drops what comes: testing panics on a Logf after the end, and a
// goroutine may still log.
type LogWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

// NewLogWriter returns a LogWriter for tb.
func NewLogWriter(tb testing.TB) *LogWriter {
	w := &LogWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}
