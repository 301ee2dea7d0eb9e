package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

// net/http's error log: accept errors are warnings, handler panics errors,
// each at most every 10 s; the rest is debug.
func TestServerLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := &serverLog{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for range 3 {
		_, _ = l.Write([]byte("http: Accept error: accept tcp 127.0.0.1:8080: accept4: too many open files; retrying in 5ms\n"))
	}
	for range 2 {
		_, _ = l.Write([]byte("http: panic serving 127.0.0.1:5555: boom\n"))
	}
	_, _ = l.Write([]byte("http: TLS handshake error from 127.0.0.1:5556: EOF\n"))
	var levels []string
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		levels = append(levels, m["level"].(string))
	}
	want := []string{"WARN", "ERROR", "DEBUG"}
	if len(levels) != len(want) || levels[0] != want[0] || levels[1] != want[1] || levels[2] != want[2] {
		t.Fatalf("levels %v, want %v (one line per kind within 10 s)", levels, want)
	}
}
