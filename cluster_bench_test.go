package main

// Benchmarks of a 3-node cluster running in this process, all on
// 127.0.0.1. Run them with
//
//	go test -run '^$' -bench 'Convergence|CrossNode|KilledNode' -benchtime=300x .
//
// BenchmarkKilledNodeOffline kills at most 3 nodes whatever b.N is (each
// takes a fresh cluster and seconds of failure detection).

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/counter"
	"wsmesh/internal/faultnet"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// clusterBenchPercentile returns the p-th percentile (nearest rank) of
// sorted.
func clusterBenchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// clusterBenchState returns the state in which n lists member name.
func clusterBenchState(n *nodetest.Node, name string) string {
	for _, m := range n.Cluster().Members() {
		if m.Name == name {
			return m.State
		}
	}
	return "absent"
}

func clusterBenchUS(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// clusterBenchSpin checks cond in a tight loop, yielding the processor
// between checks, until it holds; false if limit passed first.
func clusterBenchSpin(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		runtime.Gosched()
	}
	return true
}

// BenchmarkConvergence measures how soon a user who just connected is
// routable from another node: each op connects a fresh user to t1 and
// times from the moment the dial returns (the WebSocket is open) until
// t3's table lists t1 as an owner of that user, polled in a tight loop.
// Then the client closes and the op waits (polling every 5ms) until t3
// forgets the session, so every op starts from a quiet cluster. ns/op
// covers the whole op, that wait included; p50-us, p99-us and max-us cover
// the convergence alone. The server registers the session once it has
// answered the upgrade, so on a busy machine t3 may know the user before
// the client even sees the dial return: early/op is the fraction of ops
// where it did (their time is ~0), and dial-p50-us and dial-p99-us time
// from the start of the dial instead (handshake included).
//
// The tight poll costs a processor: on a 2-core machine it slows the very
// path it times, and the tail (p99, max) shows it.
func BenchmarkConvergence(b *testing.B) {
	nodes := nodetest.StartCluster(quietTB{b}, 3)
	t1, t3 := nodes[0], nodes[2]
	users := make([]string, b.N)
	tokens := make([]string, b.N)
	for i := range b.N {
		users[i] = "conv" + strconv.Itoa(i)
		tokens[i] = t1.Token(b, users[i], "")
	}
	lat := make([]time.Duration, 0, b.N)      // from the dial's return
	fromDial := make([]time.Duration, 0, b.N) // from the dial's start
	early := 0                                // ops where t3 knew the user when the dial returned
	b.ReportAllocs()
	b.ResetTimer()
	for i, u := range users {
		dial := time.Now()
		c, _, err := t1.TryDial(tokens[i], testsupport.DialOpts{})
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		open := time.Now()
		if slices.Contains(t3.Cluster().Owners(u), "t1") {
			early++
		}
		if !clusterBenchSpin(testsupport.WaitLimit, func() bool { return slices.Contains(t3.Cluster().Owners(u), "t1") }) {
			c.Close()
			b.Fatalf("user %s on t1 not in t3's table within %s", u, testsupport.WaitLimit)
		}
		seen := time.Now()
		lat = append(lat, seen.Sub(open))
		fromDial = append(fromDial, seen.Sub(dial))
		c.Close()
		// Not timed: poll gently, so as not to load the machine for the next op.
		testsupport.WaitFor(b, u+" gone from t3's table", func() bool { return len(t3.Cluster().Owners(u)) == 0 })
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(fromDial)
	b.ReportMetric(clusterBenchUS(clusterBenchPercentile(lat, 50)), "p50-us")
	b.ReportMetric(clusterBenchUS(clusterBenchPercentile(lat, 99)), "p99-us")
	b.ReportMetric(clusterBenchUS(lat[len(lat)-1]), "max-us")
	b.ReportMetric(clusterBenchUS(clusterBenchPercentile(fromDial, 50)), "dial-p50-us")
	b.ReportMetric(clusterBenchUS(clusterBenchPercentile(fromDial, 99)), "dial-p99-us")
	b.ReportMetric(float64(early)/float64(b.N), "early/op")
}

// latencyClient is the gws.Event of a benchmark client that reads the send
// time (Unix nanoseconds) from each message's data and records how long
// the message took to arrive.
type latencyClient struct {
	benchClient // pings, closes; its msgs counts messages

	mu  sync.Mutex
	lat []time.Duration
	bad atomic.Int64 // messages whose data is not a send time
}

func (h *latencyClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	now := time.Now().UnixNano()
	sent, ok := sentAtOf(m.Bytes())
	m.Close()
	if ok {
		h.mu.Lock()
		h.lat = append(h.lat, time.Duration(now-sent))
		h.mu.Unlock()
	} else {
		h.bad.Add(1)
	}
	h.msgs.Add()
}

// take returns the latencies recorded since the last take, sorted.
func (h *latencyClient) take() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.lat
	h.lat = nil
	slices.Sort(out)
	return out
}

// sentAtOf reads the number in a frame {"type":"message","id":...,"data":N}.
func sentAtOf(frame []byte) (int64, bool) {
	const key = `"data":`
	i := bytes.LastIndex(frame, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimSuffix(frame[i+len(key):], []byte("}"))
	n, err := strconv.ParseInt(string(rest), 10, 64)
	return n, err == nil
}

// BenchmarkCrossNodeLatency measures the latency of a message posted to
// /send on t1 to a client connected to t2: from just before the request
// to the client's receipt of the frame (the frame carries the send time).
//   - seq: b.N sends one after another on one keep-alive connection;
//   - rate=1000: b.N sends, one per tick of a 1ms ticker (open loop: the
//     next send does not wait for the last one), posted by 8 workers on
//     up to 8 keep-alive connections; a send's clock starts when a worker
//     starts the request, so neither the ticker's lateness (Go's timers
//     wake up to ~1ms late on an idle process) nor a wait for a free
//     worker counts. sends/s shows the rate reached.
//
// Metrics: p50-us, p99-us and max-us of that latency, and sends/s.
func BenchmarkCrossNodeLatency(b *testing.B) {
	nodes := nodetest.StartCluster(quietTB{b}, 3)
	t1, t2 := nodes[0], nodes[1]

	msgs := counter.New()
	handler := &latencyClient{benchClient: benchClient{msgs: msgs}}
	var clients benchConns
	b.Cleanup(func() { clients.closeAll(b) })
	if err := clients.dial(&net.Dialer{Timeout: 5 * time.Second}, t2.Addr(), t2.Token(b, "lat", ""), handler); err != nil {
		b.Fatalf("dial t2: %v", err)
	}
	nodetest.WaitRoutable(b, nodes, "lat", "t2")

	const workers = 8
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: benchDeadline}
	url := "http://" + t1.Addr() + "/send"
	// post sends one message carrying sentAt and checks it was delivered.
	post := func(sentAt time.Time, buf *bytes.Buffer) error {
		body := fmt.Appendf(nil, `{"users":["lat"],"data":%d}`, sentAt.UnixNano())
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+testsupport.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return err
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("status %d: %.300s", resp.StatusCode, buf.Bytes())
		case !bytes.Contains(buf.Bytes(), []byte(`"delivered":1,`)):
			return fmt.Errorf("not delivered: %.300s", buf.Bytes())
		}
		return nil
	}
	var buf bytes.Buffer
	if err := post(time.Now(), &buf); err != nil { // one checked send before timing
		b.Fatalf("first send: %v", err)
	}
	if !msgs.WaitFor(1, benchDeadline) {
		b.Fatal("first send not received")
	}
	handler.take()

	// finish waits for every message of the run and reports.
	finish := func(b *testing.B, base int64, start time.Time) {
		if !msgs.WaitFor(base+int64(b.N), benchDeadline) {
			b.Fatalf("client received %d of %d messages within %s", msgs.Load()-base, b.N, benchDeadline)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		lat := handler.take()
		if n := handler.bad.Load(); n > 0 {
			b.Fatalf("%d messages without a send time", n)
		}
		if len(lat) != b.N {
			b.Fatalf("%d latencies recorded for %d sends", len(lat), b.N)
		}
		if c := handler.closed.Load(); c > 0 {
			b.Fatalf("the client was closed")
		}
		b.ReportMetric(clusterBenchUS(clusterBenchPercentile(lat, 50)), "p50-us")
		b.ReportMetric(clusterBenchUS(clusterBenchPercentile(lat, 99)), "p99-us")
		b.ReportMetric(clusterBenchUS(lat[len(lat)-1]), "max-us")
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sends/s")
	}

	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		base := msgs.Load()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			if err := post(time.Now(), &buf); err != nil {
				b.Fatalf("send %d: %v", i, err)
			}
		}
		finish(b, base, start)
	})

	const rate = 1000
	b.Run("rate="+strconv.Itoa(rate), func(b *testing.B) {
		b.ReportAllocs()
		base := msgs.Load()
		jobs := make(chan struct{}, b.N) // never full: sends are never dropped
		var failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				var buf bytes.Buffer
				for range jobs {
					if err := post(time.Now(), &buf); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			})
		}
		tick := time.NewTicker(time.Second / rate)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			<-tick.C
			jobs <- struct{}{}
		}
		tick.Stop()
		close(jobs)
		wg.Wait()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d sends failed, the first: %v", n, firstErr.Load())
		}
		finish(b, base, start)
	})
}

// BenchmarkKilledNodeOffline makes t3, which holds user v's session,
// vanish without leaving (the fault net, internal/faultnet, cuts its
// gossip, UDP and TCP, from everyone: to the others it looks like a
// crashed host) and measures on t1:
//   - offline-ms: how long a POST /send to v takes to answer "offline"
//     right after the cut (the longest over the rounds; must be < 1s);
//   - dead-ms: the time from the cut until t1's table no longer lists t3
//     as an owner of v, that is until memberlist declares t3 dead (the
//     mean over the rounds; dead-max-ms the longest).
//
// Each round takes a fresh 3-node cluster (faultnet.FastGossip timings); there are
// min(b.N, 3) rounds, and ns/op is the mean time to dead.
func BenchmarkKilledNodeOffline(b *testing.B) {
	b.StopTimer()
	rounds := min(b.N, 3)
	var offline, dead []time.Duration
	tb := &cutOffTB{TB: b}
	for r := range rounds {
		fn := faultnet.New(uint64(r + 1))
		nodes := nodetest.StartCluster(tb, 3, nodetest.FaultNet(fn))
		t1, t3 := nodes[0], nodes[2]
		c, _, err := t3.TryDial(t3.Token(b, "v", ""), testsupport.DialOpts{})
		if err != nil {
			b.Fatalf("dial t3: %v", err)
		}
		nodetest.WaitRoutable(b, nodes, "v", "t3")
		// Warm t1's keep-alive connection: time the cluster path, not a dial.
		t1.Send(b, `{"users":["nobody"],"data":0}`)

		fn.Isolate("t3")
		cut := time.Now()
		out := t1.Send(b, `{"users":["v"],"data":"anyone there?"}`)
		took := time.Since(cut)
		if out["unreachable"] != 1.0 || out["delivered"] != 0.0 {
			b.Fatalf("round %d: send to v on vanished t3: %v, want unreachable", r, out)
		}
		if took >= time.Second {
			b.Errorf("round %d: send to v on vanished t3 took %s, want < 1s", r, took)
		}
		tick := time.NewTicker(time.Millisecond)
		limit := time.NewTimer(testsupport.WaitLimit)
		for slices.Contains(t1.Cluster().Owners("v"), "t3") {
			select {
			case <-tick.C:
			case <-limit.C:
				b.Fatalf("round %d: t1 still lists t3 as an owner of v %s after the cut (t1 sees t3 %s)", r, testsupport.WaitLimit, clusterBenchState(t1, "t3"))
			}
		}
		gone := time.Since(cut)
		tick.Stop()
		limit.Stop()
		offline, dead = append(offline, took), append(dead, gone)
		b.Logf("b.N=%d round %d: offline answer in %s; t3 gone from t1's table after %s (t1 sees t3 %s); fault net: %v",
			b.N, r, took.Round(time.Microsecond), gone.Round(time.Millisecond), clusterBenchState(t1, "t3"), fn.Stats())

		c.Close()
		for _, n := range nodes { // free the round's nodes now; their cleanups then do nothing
			n.Stop(b)
		}
	}
	if n := tb.dropped.Load(); n > 0 {
		b.Logf("b.N=%d: %d expected warnings of cut-off or stopping nodes not shown (no route to host, use of closed network connection)", b.N, n)
	}
	var sum time.Duration
	for _, d := range dead {
		sum += d
	}
	mean := sum / time.Duration(len(dead))
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	b.ReportMetric(ms(slices.Max(offline)), "offline-ms")
	b.ReportMetric(ms(mean), "dead-ms")
	b.ReportMetric(ms(slices.Max(dead)), "dead-max-ms")
	b.ReportMetric(float64(mean.Nanoseconds()), "ns/op") // the work was done per round, not per b.N
}

// cutOffTB is quietTB that also counts, rather than shows, what nodes are
// expected to log once the fault net cuts one off ("no route to host":
// the cut-off node re-joining, its peers probing it) or while they stop
// (memberlist's "use of closed network connection").
type cutOffTB struct {
	testing.TB
	dropped atomic.Int64
}

func (q *cutOffTB) Logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if strings.Contains(s, "no route to host") || strings.Contains(s, "use of closed network connection") {
		q.dropped.Add(1)
		return
	}
	quietTB{q.TB}.Logf("%s", s)
}
