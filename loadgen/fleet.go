package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// workerHandle is the parent's end of one worker: a child process
// (`bench -worker`) or, with -workers 0, a goroutine behind pipes.
type workerHandle struct {
	id      int
	pid     int // 0 in-process
	clients int

	cmd *exec.Cmd // nil in-process
	in  io.WriteCloser

	reqMu sync.Mutex // one request at a time
	encMu sync.Mutex
	enc   *json.Encoder

	connected chan fromWorker
	reports   chan fromWorker
	final     chan fromWorker
	failure   chan string // "error" messages

	exited  chan struct{} // the worker ended and its output is read
	exitErr error
}

// startWorker starts worker id: exe bench -worker, or in-process if exe is "".
func startWorker(id int, exe string, logw io.Writer) (*workerHandle, error) {
	h := &workerHandle{
		id:        id,
		connected: make(chan fromWorker, 1),
		reports:   make(chan fromWorker, 1),
		final:     make(chan fromWorker, 1),
		failure:   make(chan string, 1),
		exited:    make(chan struct{}),
	}
	var out io.Reader
	var wait func() error
	if exe == "" {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		h.in, out = inW, outR
		res := make(chan int, 1)
		go func() {
			code := WorkerMain(context.Background(), inR, outW)
			_ = inR.Close()
			_ = outW.Close()
			res <- code
		}()
		wait = func() error {
			if code := <-res; code != 0 {
				return fmt.Errorf("exit code %d", code)
			}
			return nil
		}
	} else {
		h.cmd = exec.Command(exe, "bench", "-worker")
		h.cmd.Env = os.Environ()
		h.cmd.Stderr = logw
		// Its own process group: a Ctrl-C on the terminal reaches only the
		// parent, which stops the workers in order. Pdeathsig: if the parent
		// dies anyway, so does the worker (it also exits when stdin closes).
		h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		var err error
		if h.in, err = h.cmd.StdinPipe(); err != nil {
			return nil, err
		}
		if out, err = h.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
		if err := h.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start worker %d: %w", id, err)
		}
		h.pid = h.cmd.Process.Pid
		wait = h.cmd.Wait
	}
	h.enc = json.NewEncoder(h.in)
	go func() {
		dec := json.NewDecoder(out)
		for {
			var m fromWorker
			if err := dec.Decode(&m); err != nil {
				break
			}
			var ch chan fromWorker
			switch m.Type {
			case "connected":
				ch = h.connected
			case "report":
				ch = h.reports
			case "final":
				ch = h.final
			case "error":
				select {
				case h.failure <- m.Error:
				default:
				}
				continue
			default:
				continue
			}
			select {
			case ch <- m:
			default: // unasked for: dropped
			}
		}
		_, _ = io.Copy(io.Discard, out)
		h.exitErr = wait()
		close(h.exited)
	}()
	return h, nil
}

func (h *workerHandle) name() string {
	if h.pid == 0 {
		return fmt.Sprintf("worker %d (in-process)", h.id)
	}
	return fmt.Sprintf("worker %d (pid %d)", h.id, h.pid)
}

func (h *workerHandle) sendOp(m toWorker) error {
	h.encMu.Lock()
	defer h.encMu.Unlock()
	return h.enc.Encode(m)
}

// deadErr says why a worker is gone.
func (h *workerHandle) deadErr() error {
	select {
	case msg := <-h.failure:
		return fmt.Errorf("%s: %s", h.name(), msg)
	default:
	}
	return fmt.Errorf("%s exited: %v", h.name(), h.exitErr)
}

// await waits for a message on ch, bounded by limit and ctx.
func (h *workerHandle) await(ctx context.Context, ch chan fromWorker, limit time.Duration, what string) (fromWorker, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case m := <-ch:
		return m, nil
	case <-h.exited:
		select {
		case m := <-ch: // sent just before exiting
			return m, nil
		default:
		}
		return fromWorker{}, h.deadErr()
	case msg := <-h.failure:
		return fromWorker{}, fmt.Errorf("%s: %s", h.name(), msg)
	case <-t.C:
		return fromWorker{}, fmt.Errorf("%s: no %s within %s", h.name(), what, limit)
	case <-ctx.Done():
		return fromWorker{}, ctx.Err()
	}
}

// report asks for the worker's counts (and, if window, its latencies since
// the last such report).
func (h *workerHandle) report(ctx context.Context, window bool) (fromWorker, error) {
	h.reqMu.Lock()
	defer h.reqMu.Unlock()
	select {
	case <-h.reports: // a late answer to a request that timed out
	default:
	}
	if err := h.sendOp(toWorker{Op: "report", Window: window}); err != nil {
		return fromWorker{}, fmt.Errorf("%s: %w", h.name(), err)
	}
	return h.await(ctx, h.reports, 10*time.Second, "report")
}

// stop asks the worker to close its connections and send its final
// report, then waits for it to exit; it kills a worker that takes too long.
func (h *workerHandle) stop() (fromWorker, error) {
	h.reqMu.Lock()
	defer h.reqMu.Unlock()
	var f fromWorker
	err := h.sendOp(toWorker{Op: "stop"})
	if err == nil {
		f, err = h.await(context.Background(), h.final, 30*time.Second, "final report")
	}
	_ = h.in.Close()
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		h.kill()
	}
	if err == nil && h.exitErr != nil {
		err = fmt.Errorf("%s: %v", h.name(), h.exitErr)
	}
	return f, err
}

// kill ends the worker at once (SIGKILL; in-process: closes its input) and
// waits for it.
func (h *workerHandle) kill() {
	_ = h.in.Close()
	if h.cmd != nil {
		_ = h.cmd.Process.Kill()
	}
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second): // in-process: its connections' close is bounded
	}
}

// fleet is every worker of a run.
type fleet struct {
	workers []*workerHandle
}

// aggregate is the sum of the workers' reports.
type aggregate struct {
	Opened, Failed, Dropped, Received, Other, Bad int64
	Joined, JoinErrors                            int64
	Window                                        *Histogram
}

func (f *fleet) report(ctx context.Context, window bool) (aggregate, error) {
	a := aggregate{}
	if window {
		a.Window = NewHistogram()
	}
	res := make([]fromWorker, len(f.workers))
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, w := range f.workers {
		wg.Go(func() { res[i], errs[i] = w.report(ctx, window) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return a, err
	}
	for _, r := range res {
		a.Opened += r.Opened
		a.Failed += r.Failed
		a.Dropped += r.Dropped
		a.Received += r.Received
		a.Other += r.Other
		a.Bad += r.Bad
		a.Joined += r.Joined
		a.JoinErrors += r.JoinErrors
		if window && r.Window != nil {
			_ = a.Window.MergeSnapshot(*r.Window)
		}
	}
	return a, nil
}

// stop stops every worker at once and returns their final reports.
func (f *fleet) stop() ([]fromWorker, error) {
	res := make([]fromWorker, len(f.workers))
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, w := range f.workers {
		wg.Go(func() { res[i], errs[i] = w.stop() })
	}
	wg.Wait()
	return res, errors.Join(errs...)
}

// kill ends every worker still running.
func (f *fleet) kill() {
	var wg sync.WaitGroup
	for _, w := range f.workers {
		wg.Go(w.kill)
	}
	wg.Wait()
}
