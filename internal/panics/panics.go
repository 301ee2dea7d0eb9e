// Package panics describes a recovered panic for a log line. wsmesh recovers
// at its own goroutine boundaries (a session's read loop and writer, a batch
// item, a relay fan-out) so that a bug closes one connection or fails one
// request, never the process; each logs what it recovered with Attrs.
package panics

import (
	"fmt"
	"runtime/debug"
)

// Attrs returns slog attributes for a value recovered from a panic: the
// value as text and the stack of the goroutine that recovered it. Call it in
// the deferred function that called recover, so the stack shows the panic.
func Attrs(v any) []any {
	return []any{"panic", fmt.Sprint(v), "stack", string(debug.Stack())}
}
