package main

// The harness of the tests and benchmarks that send events to a real
// backend process (internal/testsupport/cmd/backend): building and running
// it, steering its answers, reading what it accepted; nodes run as
// processes (procNode) with an [upstream] table; clients that send
// numbered messages; and the per-session order check.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
)

// backendSecret is the nodes' upstream.secret in these tests.
const backendSecret = config.SampleUpstreamSecret

var (
	backendOnce sync.Once
	backendBin  string
	backendErr  error
)

// goBuildBackend builds the backend program as bin.
func goBuildBackend(bin string) error {
	out, err := exec.Command("go", "build", "-o", bin, "./internal/testsupport/cmd/backend").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build backend: %w\n%s", err, out)
	}
	return nil
}

// buildBackendIn builds the backend program into dir (benchmarks: into
// their temp dir).
func buildBackendIn(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "backend")
	if err := goBuildBackend(bin); err != nil {
		tb.Fatal(err)
	}
	return bin
}

// buildBackend builds the backend once per test run, beside the wsmesh
// binary (TestMain removes both).
func buildBackend(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(buildBinary(t))
	backendOnce.Do(func() {
		backendBin = filepath.Join(dir, "backend")
		backendErr = goBuildBackend(backendBin)
	})
	if backendErr != nil {
		t.Fatal(backendErr)
	}
	return backendBin
}

// backendProc is the backend program running as a process.
type backendProc struct {
	url     string // upstream.url for the nodes
	control string // base URL of its control listener
	cmd     *exec.Cmd
	hc      *http.Client
}

// step is one answer of the backend's plan (see its package doc).
type step struct {
	Status    int    `json:"status,omitempty"`
	Body      string `json:"body,omitempty"`
	Replies   bool   `json:"replies,omitempty"`
	BodyBytes int    `json:"body_bytes,omitempty"`
	Drip      bool   `json:"drip,omitempty"`
	Hang      string `json:"hang,omitempty"`
	Reset     bool   `json:"reset,omitempty"`
	Location  string `json:"location,omitempty"`
	Times     int    `json:"times,omitempty"`
}

// gotEvent is an event the backend accepted, with when and how it came.
type gotEvent struct {
	backendEvent
	Post   int    // the backend's POST number, from 1
	AtNS   int64  // when the POST's body was read, Unix ns
	Remote string // the POST's remote address
}

// backendPost is the backend's record of one POST.
type backendPost struct {
	N         int    `json:"n"`
	AtNS      int64  `json:"at_ns"`
	Remote    string `json:"remote"`
	Events    int    `json:"events"`
	Bytes     int    `json:"bytes"`
	SigOK     bool   `json:"sig_ok"`
	Status    int    `json:"status"`
	Accepted  bool   `json:"accepted"`
	Hang      string `json:"hang"`
	Reset     bool   `json:"reset"`
	Drip      bool   `json:"drip"`
	BodyBytes int    `json:"body_bytes"`
}

// backendStats are the backend's totals.
type backendStats struct {
	Posts          int  `json:"posts"`
	AcceptedEvents int  `json:"accepted_events"`
	BadSignatures  int  `json:"bad_signatures"`
	RedirectHits   int  `json:"redirect_hits"`
	Hanging        int  `json:"hanging"`
	Down           bool `json:"down"`
	PlanLeft       int  `json:"plan_left"`
}

// startBackend runs the backend program bin (with more flags, if any)
// and waits until it serves.
// It is killed when the test ends; its stderr goes to the test log if the
// test fails.
func startBackend(tb testing.TB, bin string, flags ...string) *backendProc {
	tb.Helper()
	cmd := exec.Command(bin, append([]string{"-secret", backendSecret}, flags...)...)
	var stderr bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return stderr.Write(p)
	})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan error, 1)
	addrs := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			var m map[string]string
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				addrs <- m
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if tb.Failed() {
			mu.Lock()
			tb.Logf("backend stderr:\n%s", stderr.String())
			mu.Unlock()
		}
	})
	b := &backendProc{cmd: cmd, hc: &http.Client{Timeout: 10 * time.Second}}
	select {
	case m := <-addrs:
		b.url = "http://" + m["events"] + "/events"
		b.control = "http://" + m["control"]
	case err := <-exited:
		exited <- err
		tb.Fatalf("backend exited before serving: %v", err)
	case <-time.After(testsupport.WaitLimit):
		tb.Fatalf("backend did not print its addresses within %s", testsupport.WaitLimit)
	}
	tb.Cleanup(b.hc.CloseIdleConnections)
	return b
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// call does one request to the control listener and decodes its answer
// into out (if not nil).
func (b *backendProc) call(tb testing.TB, method, path string, in, out any) {
	tb.Helper()
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			tb.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.control+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		tb.Fatalf("backend %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("backend %s %s: %d %s %v", method, path, resp.StatusCode, raw, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("backend %s %s: %v", method, path, err)
		}
	}
}

// plan replaces the backend's plan with steps.
func (b *backendProc) plan(tb testing.TB, steps ...step) {
	tb.Helper()
	b.call(tb, http.MethodPost, "/plan", map[string][]step{"steps": steps}, nil)
}

// release ends the backend's hanging answers now.
func (b *backendProc) release(tb testing.TB) {
	tb.Helper()
	b.call(tb, http.MethodPost, "/release", nil, nil)
}

// down closes the backend's events listener for d.
func (b *backendProc) down(tb testing.TB, d time.Duration) {
	tb.Helper()
	b.call(tb, http.MethodPost, "/down", map[string]string{"for": d.String()}, nil)
}

// events returns every event the backend accepted, in arrival order.
func (b *backendProc) events(tb testing.TB) []gotEvent {
	tb.Helper()
	var out struct {
		Events []struct {
			Post   int             `json:"post"`
			AtNS   int64           `json:"at_ns"`
			Remote string          `json:"remote"`
			Event  json.RawMessage `json:"event"`
		} `json:"events"`
	}
	b.call(tb, http.MethodGet, "/events", nil, &out)
	evs := make([]gotEvent, len(out.Events))
	for i, e := range out.Events {
		if err := json.Unmarshal(e.Event, &evs[i].backendEvent); err != nil {
			tb.Fatalf("backend event %s: %v", e.Event, err)
		}
		evs[i].Post, evs[i].AtNS, evs[i].Remote = e.Post, e.AtNS, e.Remote
	}
	return evs
}

// posts returns the backend's record of every POST.
func (b *backendProc) posts(tb testing.TB) []backendPost {
	tb.Helper()
	var out struct{ Posts []backendPost }
	b.call(tb, http.MethodGet, "/posts", nil, &out)
	return out.Posts
}

// stats returns the backend's totals.
func (b *backendProc) stats(tb testing.TB) backendStats {
	tb.Helper()
	var out backendStats
	b.call(tb, http.MethodGet, "/stats", nil, &out)
	return out
}

// upstreamTOML is an [upstream] table sending to url, with more keys,
// and other tables after it if extra holds them.
func upstreamTOML(url, extra string) string {
	return fmt.Sprintf("[upstream]\nurl = %q\nsecret = %q\n%s\n", url, backendSecret, extra)
}

// newUpstreamProcNode is newProcNode with tables appended to its config
// (an [upstream] table, a [session] table: newProcNode writes neither).
func newUpstreamProcNode(t *testing.T, dir, name, seed, tables string) *procNode {
	t.Helper()
	p := newProcNode(t, dir, name, seed)
	f, err := os.OpenFile(p.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, tables); err != nil {
		t.Fatal(err)
	}
	return p
}

// startUpstreamNode starts one node process with these tables; its log
// tail is logged if the test fails.
func startUpstreamNode(t *testing.T, name, tables string) *procNode {
	t.Helper()
	p := newUpstreamProcNode(t, t.TempDir(), name, "", tables)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.logTail(40))
		}
	})
	p.start(t, buildBinary(t))
	return p
}

// numbered sends n messages {"type":"message","id":"c-<i>","data":{"n":i}}
// on c, one per every (none if 0), and returns a channel that gets the
// first write error or nil once all are written.
func numbered(c *testsupport.WSClient, n int, every time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		var tick *time.Ticker
		if every > 0 {
			tick = time.NewTicker(every)
			defer tick.Stop()
		}
		for i := range n {
			if err := c.Conn.WriteString(fmt.Sprintf(`{"type":"message","id":"c-%d","data":{"n":%d}}`, i, i)); err != nil {
				done <- fmt.Errorf("message %d: %w", i, err)
				return
			}
			if tick != nil {
				<-tick.C
			}
		}
		done <- nil
	}()
	return done
}

// answers reads c's frames until acks+errors of message frames reach n,
// or limit passes (the test fails). It returns the client ids acked and
// the error frames, in the order they came; pongs, replies and messages
// are skipped.
func answers(t *testing.T, c *testsupport.WSClient, n int, limit time.Duration) (acks []string, errs []map[string]any) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for len(acks)+len(errs) < n {
		select {
		case b := <-c.Frames:
			var f map[string]any
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatalf("frame is not JSON: %q", b)
			}
			switch {
			case f["type"] == "ack":
				acks = append(acks, fmt.Sprint(f["id"]))
			case f["type"] == "error" && f["op"] == "message":
				errs = append(errs, f)
			}
		case <-c.Closed():
			t.Fatalf("client closed (%d %q) after %d acks and %d errors of %d", c.Code, c.Reason, len(acks), len(errs), n)
		case <-deadline.C:
			t.Fatalf("%d acks and %d errors of %d messages within %s", len(acks), len(errs), n, limit)
		}
	}
	return acks, errs
}

// checkAcks fails the test unless acks are c-0 ... c-<n-1> in order.
func checkAcks(t *testing.T, who string, acks []string, n int) {
	t.Helper()
	if len(acks) != n {
		t.Fatalf("%s: %d acks, want %d", who, len(acks), n)
	}
	for i, id := range acks {
		if id != "c-"+strconv.Itoa(i) {
			t.Fatalf("%s: ack %d is %s, want c-%d (acks out of order)", who, i, id, i)
		}
	}
}

// sessionLog is what the backend got of one session's numbered messages.
type sessionLog struct {
	seqs       []int // the n of each message event, deduplicated by event id, in arrival order
	duplicates int   // events seen again (same id): a batch retried after the backend took it
	connectAt  int   // index of the connect event among the session's deduplicated events; -1 if none
}

// bySession deduplicates events by id (the first copy counts) and
// returns, per session, the numbered messages in arrival order.
func bySession(t *testing.T, events []gotEvent) map[string]*sessionLog {
	t.Helper()
	seen := map[string]bool{}
	out := map[string]*sessionLog{}
	for _, e := range events {
		l := out[e.Session]
		if l == nil {
			l = &sessionLog{connectAt: -1}
			out[e.Session] = l
		}
		if seen[e.ID] {
			l.duplicates++
			continue
		}
		seen[e.ID] = true
		switch e.Type {
		case "connect":
			l.connectAt = len(l.seqs)
		case "message":
			var d struct{ N *int }
			if err := json.Unmarshal(e.Data, &d); err != nil || d.N == nil {
				t.Fatalf("message event %s: data %s is not {\"n\":...}", e.ID, e.Data)
			}
			l.seqs = append(l.seqs, *d.N)
		}
	}
	return out
}

// lostAndReordered counts, of numbered messages 0..n-1, those missing
// from seqs, those that came after a higher number, and extra copies.
func lostAndReordered(seqs []int, n int) (lost, reordered, extra int) {
	count := make([]int, n)
	high := -1
	for _, s := range seqs {
		if s < 0 || s >= n {
			extra++
			continue
		}
		count[s]++
		if count[s] > 1 {
			extra++
		}
		if s < high {
			reordered++
		}
		high = max(high, s)
	}
	for _, c := range count {
		if c == 0 {
			lost++
		}
	}
	return lost, reordered, extra
}

// metricValue returns the value of the sample named exactly line (name
// and labels) in a /metrics text, or -1.
func metricValue(metrics, line string) float64 {
	for _, l := range strings.Split(metrics, "\n") {
		if rest, ok := strings.CutPrefix(l, line+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}
