// Package throttle lets one event through per interval and counts the rest:
// for log lines that a client or a failing peer could otherwise repeat
// thousands of times a second.
package throttle

import (
	"sync"
	"time"
)

// Every lets one event through per interval. The zero value lets the first
// event through. It is safe for concurrent use.
type Every struct {
	mu     sync.Mutex
	last   time.Time
	missed uint64
}

// Allow reports whether an event may be reported now (the first one, or the
// first after interval has passed since the last allowed one), and how many
// events it stands for: itself and those held back since the last one.
func (e *Every) Allow(interval time.Duration) (n uint64, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.missed++
	if now := time.Now(); e.last.IsZero() || now.Sub(e.last) >= interval {
		n, e.last, e.missed = e.missed, now, 0
		return n, true
	}
	return 0, false
}
