package loadgen

import (
	"context"
	"fmt"
	"time"
)

// showProgress rewrites one line on the terminal every second until ctx
// ends: connections, sends, messages received, their rate and p99 latency
// over the last second. It prints nothing when stderr is not a terminal.
func (r *runner) showProgress(ctx context.Context) {
	if !r.tty {
		return
	}
	defer func() {
		r.progressMu.Lock()
		if r.progress != "" {
			fmt.Fprint(r.log, "\r\x1b[K")
			r.progress = ""
		}
		r.progressMu.Unlock()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastRecv int64
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		agg, err := r.fleet.report(ctx, true)
		if err != nil {
			continue // the run itself reports a worker that is gone
		}
		now := time.Now()
		rate := float64(agg.Received-lastRecv) / now.Sub(lastAt).Seconds()
		lastRecv, lastAt = agg.Received, now
		line := fmt.Sprintf("conns %d/%d", agg.Opened-agg.Dropped, r.o.Clients)
		if agg.Failed+agg.Dropped > 0 {
			line += fmt.Sprintf(" (%d failed, %d dropped)", agg.Failed, agg.Dropped)
		}
		if s := r.sender; s != nil {
			verb := "sent"
			if s.room != "" {
				verb = "published"
			}
			line += fmt.Sprintf("  %s %d  received %d  %.0f msgs/s", verb, s.started.Load(), agg.Received, rate)
			if agg.Window.Count() > 0 {
				line += "  p99 " + fmtNS(agg.Window.Quantile(0.99))
			}
		}
		r.progressMu.Lock()
		r.progress = "\r" + line + "\x1b[K"
		fmt.Fprint(r.log, r.progress)
		r.progressMu.Unlock()
	}
}
