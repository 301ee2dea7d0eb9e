package node

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"wsmesh/internal/throttle"
)

// serverLog takes net/http's error log lines. Accept errors (at the open-file
// limit: "too many open files") mean new connections wait unanswered in the
// kernel's queue: a warning, at most every 10 s. The rest (a client's bad
// TLS or broken request) is per-connection noise: debug. A handler's panic
// is a bug: an error, at most every 10 s.
type serverLog struct {
	log    *slog.Logger
	accept throttle.Every
	panics throttle.Every
}

func (l *serverLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if strings.Contains(line, "Accept error") {
		if n, ok := l.accept.Allow(10 * time.Second); ok {
			l.log.Warn("http: cannot accept connections: new clients wait unanswered (open-file limit? see session.max_connections)",
				"err", line, "times", n)
		}
		return len(p), nil
	}
	if strings.Contains(line, "panic serving") { // a handler's panic, recovered by net/http: a bug
		if n, ok := l.panics.Allow(10 * time.Second); ok {
			l.log.Error("http: handler panicked (request answered with a closed connection)", "err", line, "times", n)
		}
		return len(p), nil
	}
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(line)
	}
	return len(p), nil
}
