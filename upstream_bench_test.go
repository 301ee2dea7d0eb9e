package main

// End-to-end benchmarks of upstream: real WebSocket clients (gws, in this
// process) send messages through a node process to the backend process
// (internal/testsupport/cmd/backend), all on 127.0.0.1.
//
//	go test -run '^$' -bench UpstreamThroughput -benchtime 100000x -count 5 . > e2e.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /max_batch e2e.txt
//	go test -run '^$' -bench UpstreamLatency -benchtime 1x -count 3 .

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/testsupport"
	"wsmesh/session"
)

// upBench is a node process sending to a backend process, for benchmarks.
type upBench struct {
	node    *benchProcess
	backend *backendProc
}

// startUpBench builds wsmesh and the backend into tb's temp dir and runs
// them: the node with [upstream] max_batch = maxBatch, messages only, no
// client rate limit.
func startUpBench(tb testing.TB, maxBatch int, backendFlags ...string) *upBench {
	tb.Helper()
	dir := tb.TempDir()
	bin := filepath.Join(dir, "wsmesh")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	be := startBackend(tb, buildBackendIn(tb, dir), backendFlags...)
	cfgPath := filepath.Join(dir, "wsmesh.toml")
	cfg := fmt.Sprintf(`[node]
name = "up"
shutdown_timeout = "10s"
[http]
listen = "127.0.0.1:0"
[cluster]
bind = "127.0.0.1:0"
[auth]
jwt_secret = %q
api_keys = [%q]
[session]
max_client_rate = 0
[log]
level = "info"
format = "json"
`, testsupport.Secret, testsupport.APIKey) + upstreamTOML(be.url, fmt.Sprintf("max_batch = %d\nevents = [\"message\"]", maxBatch))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	return &upBench{node: startBenchProcess(tb, bin, cfgPath), backend: be}
}

// upClient is the gws.Event of a benchmark client: it counts acks and
// error frames, frees a slot of its window for each, and hands the rest
// nowhere.
type upClient struct {
	window     chan struct{} // a value per message not answered yet
	acks, errs atomic.Int64
	closed     chan struct{}
}

func (*upClient) OnOpen(*gws.Conn)             {}
func (h *upClient) OnClose(*gws.Conn, error)   { close(h.closed) }
func (*upClient) OnPing(c *gws.Conn, _ []byte) { _ = c.WritePong(nil) }
func (*upClient) OnPong(*gws.Conn, []byte)     {}
func (h *upClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := m.Bytes()
	switch {
	case bytes.HasPrefix(b, []byte(`{"type":"ack"`)):
		h.acks.Add(1)
		<-h.window
	case bytes.HasPrefix(b, []byte(`{"type":"error"`)):
		h.errs.Add(1)
		<-h.window
	}
	m.Close()
}

// dialUp opens n clients to addr, each with a window of w messages.
func dialUp(tb testing.TB, addr string, n, w int) ([]*gws.Conn, []*upClient) {
	tb.Helper()
	auth, err := session.NewAuthenticator([]byte(testsupport.Secret))
	if err != nil {
		tb.Fatal(err)
	}
	conns := make([]*gws.Conn, n)
	hs := make([]*upClient, n)
	for i := range n {
		tok, err := auth.Mint("b"+strconv.Itoa(i), "", time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		hs[i] = &upClient{window: make(chan struct{}, w), closed: make(chan struct{})}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		c, _, err := gws.NewClientFromConn(hs[i], &gws.ClientOption{Addr: "ws://" + addr + "/ws?token=" + tok}, nc)
		if err != nil {
			tb.Fatalf("dial: %v", err)
		}
		conns[i] = c
		go c.ReadLoop()
	}
	tb.Cleanup(func() {
		for i, c := range conns {
			_ = c.NetConn().Close()
			<-hs[i].closed
		}
	})
	return conns, hs
}

// BenchmarkUpstreamThroughput: client messages through one node to a
// backend that answers 200 at once (it checks each signature and counts
// the events), with up to 100 events per POST and with one POST per
// event. An op is one message sent and acked (so accepted by the backend).
// 20 clients keep up to 200 messages each unanswered.
func BenchmarkUpstreamThroughput(b *testing.B) {
	for _, batch := range []int{100, 1} {
		ub := startUpBench(b, batch, "-keep=false") // for every run of the sub-benchmark
		b.Run(fmt.Sprintf("max_batch=%d", batch), func(b *testing.B) { benchUpThroughput(b, ub) })
	}
}

func benchUpThroughput(b *testing.B, ub *upBench) {
	const clients, window = 20, 200
	conns, hs := dialUp(b, ub.node.addr, clients, window)
	before := ub.backend.stats(b).AcceptedEvents
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	b.ResetTimer()
	for i, c := range conns {
		wg.Go(func() {
			for n := 0; left.Add(-1) >= 0; n++ {
				hs[i].window <- struct{}{}
				if err := c.WriteString(`{"type":"message","id":"m` + strconv.Itoa(n) + `","data":{"text":"hello, backend","n":` + strconv.Itoa(n) + `}}`); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(benchDeadline)
	for {
		var done int64
		for _, h := range hs {
			done += h.acks.Load() + h.errs.Load()
		}
		if done == int64(b.N) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages answered after %s", done, b.N, benchDeadline)
		}
		select {
		case err := <-errc:
			b.Fatal(err)
		case <-time.After(time.Millisecond):
		}
	}
	b.StopTimer()
	var errs int64
	for _, h := range hs {
		errs += h.errs.Load()
	}
	if errs > 0 {
		b.Fatalf("%d of %d messages answered with an error frame", errs, b.N)
	}
	st := ub.backend.stats(b)
	if got := st.AcceptedEvents - before; got != b.N {
		b.Fatalf("backend accepted %d events, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkUpstreamLatency: 10 clients send 100 messages/s each (1000/s
// in all) for 5 s through one node, each message's data holding when it
// was written; the backend stamps when each POST's body was read. It
// reports the percentiles of the difference (one clock: same machine).
// The work is done once per call, whatever b.N: run it with -benchtime 1x.
func BenchmarkUpstreamLatency(b *testing.B) {
	ub := startUpBench(b, 100)
	const clients, perSecond, seconds = 10, 100, 5
	conns, hs := dialUp(b, ub.node.addr, clients, perSecond*seconds)
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	b.ResetTimer()
	for i, c := range conns {
		wg.Go(func() {
			tick := time.NewTicker(time.Second / perSecond)
			defer tick.Stop()
			for n := range perSecond * seconds {
				<-tick.C
				hs[i].window <- struct{}{}
				if err := c.WriteString(`{"type":"message","id":"m` + strconv.Itoa(n) + `","data":{"t":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}}`); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	const total = clients * perSecond * seconds
	testsupport.PollUntil(b, "every message acked", benchDeadline, func() bool {
		var n int64
		for _, h := range hs {
			n += h.acks.Load() + h.errs.Load()
		}
		return n == total
	})
	b.StopTimer()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	var lat []time.Duration
	for _, e := range ub.backend.events(b) {
		var d struct{ T int64 }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.T == 0 {
			b.Fatalf("event data %s", e.Data)
		}
		lat = append(lat, time.Duration(e.AtNS-d.T))
	}
	if len(lat) != total {
		b.Fatalf("backend accepted %d events, want %d", len(lat), total)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	posts := ub.backend.stats(b).Posts
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(pct(0.999).Microseconds())/1000, "p99.9-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(total)/float64(posts), "events/POST")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds()), "ns/op") // the work was done once, whatever b.N
}
