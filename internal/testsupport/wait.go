package testsupport

import (
	"testing"
	"time"
)

// WaitLimit bounds any awaited event.
const WaitLimit = 10 * time.Second

// WaitFor polls cond until it holds, failing the test after WaitLimit.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	PollUntil(tb, what, WaitLimit, cond)
}

// PollUntil polls cond every 5ms until it holds, failing the test after
// limit; it returns how long that took.
func PollUntil(tb testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", limit, what)
		}
	}
	return time.Since(start)
}
