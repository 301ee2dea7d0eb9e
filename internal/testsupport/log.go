package testsupport

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// LogWriter sends each write, one line of a log, to tb.Logf. Once the test
// ends (after the cleanups registered later than NewLogWriter have run)
// it drops what comes: testing panics on a Logf after the end, and a
// goroutine may still log.
type LogWriter struct {
	mu    sync.Mutex
	tb    testing.TB
	done  bool
	lines []string // the last maxKeptLines lines, for Count
}

// maxKeptLines bounds what a LogWriter keeps for Count.
const maxKeptLines = 100_000

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
	line := string(bytes.TrimRight(p, "\n"))
	if !w.done {
		w.tb.Logf("%s", line)
	}
	if len(w.lines) == maxKeptLines {
		w.lines = w.lines[1:]
	}
	w.lines = append(w.lines, line)
	return len(p), nil
}

// Count returns how many of the lines written so far contain sub.
func (w *LogWriter) Count(sub string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}
