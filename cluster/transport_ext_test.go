package cluster_test

// The cluster over internal/muxnet, memberlist's streams multiplexed on one
// TCP connection per peer (the default transport), beside nodes on
// memberlist's own transport (Config.PlainTransport).

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/cluster"
	"wsmesh/internal/muxnet"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/clustertest"
)

// muxes records each node's muxnet transport, by node name.
type muxes struct {
	mu sync.Mutex
	by map[string]*muxnet.Transport
}

// capture is a startCluster option that records the node's transport
// when it is a muxnet one, under the fault net's wrapper.
func (m *muxes) capture(c *cluster.Config) {
	name, wrap := c.NodeName, c.WrapTransport
	c.WrapTransport = func(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		if mt, ok := t.(*muxnet.Transport); ok {
			m.mu.Lock()
			if m.by == nil {
				m.by = map[string]*muxnet.Transport{}
			}
			m.by[name] = mt
			m.mu.Unlock()
		}
		if wrap != nil {
			return wrap(t)
		}
		return t
	}
}

func (m *muxes) of(tb testing.TB, name string) *muxnet.Transport {
	tb.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.by[name]
	if t == nil {
		tb.Fatalf("%s is not on the muxnet transport", name)
	}
	return t
}

// plainNode is a startCluster option that puts the nodes named on
// memberlist's own transport.
func plainNode(names ...string) func(*cluster.Config) {
	return func(c *cluster.Config) {
		for _, n := range names {
			if c.NodeName == n {
				c.PlainTransport = true
			}
		}
	}
}

// callAllPairs has every node call every other n times, the calls of one
// pair in sequence and the pairs side by side, and checks every reply and
// that each node handled each sender's calls in the order they were made.
func callAllPairs(t *testing.T, nodes []*node, n int) {
	t.Helper()
	callAllPairsTagged(t, nodes, n, "")
}

// callAllPairsTagged is callAllPairs with payloads that start with tag,
// for a test that calls the same nodes in several rounds.
func callAllPairsTagged(t *testing.T, nodes []*node, n int, tag string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*len(nodes))
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			wg.Go(func() {
				for i := range n {
					p := fmt.Sprintf("%s%s:%d", tag, from.Name(), i)
					if reply, err, _ := timedCall(from, to.Name(), p); err != nil || reply != "ok:"+p {
						errs <- fmt.Errorf("call %s -> %s %q: %q, %v", from.Name(), to.Name(), p, reply, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, to := range nodes {
		next := map[string]int{}
		for _, p := range to.relayed.payloads() {
			from, i, _ := strings.Cut(p, ":")
			if !strings.HasPrefix(from, tag) {
				continue // an earlier round's
			}
			if strconv.Itoa(next[from]) != i {
				t.Fatalf("%s handled %q from %s, want call %d next", to.Name(), p, from, next[from])
			}
			next[from]++
		}
	}
}

// steadyGossip is a startCluster option for tests of traffic, not failure
// detection: memberlist's own timings (with FastGossip's, a busy machine
// under -race can see a node fail amid the streams) and patient calls.
func steadyGossip(c *cluster.Config) {
	patient(c)
	c.Tune = nil
}

// TestMuxClusterRelaysInOrder: three nodes on the multiplexed transport
// call each other, in order, over one connection per direction of each
// pair, and memberlist's own streams (join, push/pull) use it too.
func TestMuxClusterRelaysInOrder(t *testing.T) {
	var m muxes
	nodes, _ := startCluster(t, 3, 11, m.capture, steadyGossip)
	callAllPairs(t, nodes, 200)
	for _, n := range nodes {
		s := m.of(t, n.Name()).Stats()
		t.Logf("%s: %+v", n.Name(), s)
		if s.PlainDials != 0 || s.PlainAccepted != 0 {
			t.Errorf("%s: plain streams between muxnet nodes: %+v", n.Name(), s)
		}
		// One session to each of 2 peers; a redial or two if a session
		// broke under load, never one per call.
		if s.Dials > 4 || s.Streams < 200 {
			t.Errorf("%s: %d dials for %d streams, want at most 4 for at least 200", n.Name(), s.Dials, s.Streams)
		}
	}
}

// TestMixedCluster: one node on memberlist's own transport (as before
// this release, or PlainTransport) and two on muxnet join, converge and
// call each other every way: the muxnet nodes take its plain streams and
// dial it one connection per stream, and use a session between
// themselves. This is the middle of a one-node-at-a-time upgrade.
func TestMixedCluster(t *testing.T) {
	for _, plain := range []string{"t1", "t3"} { // the seed, or a joiner
		t.Run("plain="+plain, func(t *testing.T) {
			var m muxes
			nodes, _ := startCluster(t, 3, 12, m.capture, steadyGossip, plainNode(plain))
			clustertest.WaitConverged(t, clusters(nodes))
			callAllPairs(t, nodes, 50)
			for _, n := range nodes {
				if n.Name() == plain {
					continue
				}
				s := m.of(t, n.Name()).Stats()
				t.Logf("%s: %+v", n.Name(), s)
				if s.PlainDials == 0 || s.PlainAccepted == 0 {
					t.Errorf("%s: no plain streams with %s: %+v", n.Name(), plain, s)
				}
				if s.Sessions != 1 {
					t.Errorf("%s: %d sessions open, want 1 (to the other muxnet node)", n.Name(), s.Sessions)
				}
			}
		})
	}
}

// TestMuxBrokenConnectionRedialled: when the TCP connections under every
// session break, calls succeed again over new ones within a few seconds.
func TestMuxBrokenConnectionRedialled(t *testing.T) {
	var m muxes
	nodes, _ := startCluster(t, 2, 13, m.capture, steadyGossip)
	a, b := nodes[0], nodes[1]
	call(t, a, "t2", "before")
	call(t, b, "t1", "before")
	ta, tb := m.of(t, "t1"), m.of(t, "t2")
	before := ta.Stats().Dials + tb.Stats().Dials
	if n := ta.CloseConnsForTest() + tb.CloseConnsForTest(); n != 2 {
		t.Fatalf("closed %d connections, want 2 (one each way)", n)
	}
	took := testsupport.PollUntil(t, "calls both ways to succeed again", 5*time.Second, func() bool {
		_, err1, _ := timedCall(a, "t2", "after")
		_, err2, _ := timedCall(b, "t1", "after")
		return err1 == nil && err2 == nil
	})
	after := ta.Stats().Dials + tb.Stats().Dials
	t.Logf("calls succeed again after %s; dials %d -> %d", took, before, after)
	if after < before+2 {
		t.Fatalf("dials %d -> %d: the broken sessions were not redialled", before, after)
	}
}

// TestMuxFewConnections: 2,000 calls between two nodes dial a handful of
// TCP connections, not one or two per call as memberlist's own transport.
func TestMuxFewConnections(t *testing.T) {
	var m muxes
	nodes, _ := startCluster(t, 2, 14, m.capture, steadyGossip)
	const calls = 2000
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < calls; i += 8 {
				from, to := nodes[i%2], nodes[1-i%2]
				if _, err, _ := timedCall(from, to.Name(), strconv.Itoa(i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var dials, streams uint64
	for _, n := range nodes {
		s := m.of(t, n.Name()).Stats()
		t.Logf("%s: %+v", n.Name(), s)
		dials += s.Dials + s.PlainDials
		streams += s.Streams
	}
	if dials > 4 {
		t.Fatalf("%d TCP connections dialled for %d calls (%d streams), want at most 4", dials, calls, streams)
	}
}

// TestRollingUpgrade: three nodes on memberlist's own transport (as the
// releases before muxnet) are replaced one at a time, each by a muxnet node
// with the same name and address, and after each step every node calls
// every other, in order.
func TestRollingUpgrade(t *testing.T) {
	logs := testsupport.NewLogWriter(t)
	var m muxes
	start := func(name, bind string, seeds []string, plain bool) *node {
		t.Helper()
		cfg := cluster.Config{
			NodeName:       name,
			Bind:           bind,
			Seeds:          seeds,
			LinkKey:        cluster.DeriveLinkKey([]byte(testsupport.Secret)),
			RejoinInterval: 500 * time.Millisecond,
			CallTimeout:    5 * time.Second,
			PlainTransport: plain,
			Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name),
		}
		m.capture(&cfg)
		c, err := cluster.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		n := &node{Cluster: c, relayed: &relayLog{}}
		if err := c.Start(n.relayed); err != nil {
			t.Fatalf("start %s on %s: %v", name, bind, err)
		}
		return n
	}
	leave := func(n *node) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Leave(ctx); err != nil {
			t.Errorf("%s: %v", n.Name(), err)
		}
	}
	nodes := make([]*node, 3)
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				leave(n)
			}
		}
	})
	for i := range nodes {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].Addr()}
		}
		nodes[i] = start(fmt.Sprintf("t%d", i+1), "127.0.0.1:0", seeds, true)
	}
	clustertest.WaitConverged(t, clusters(nodes))
	callAllPairsTagged(t, nodes, 20, "plain/")
	for i, old := range nodes {
		addr := old.Addr()
		leave(old)
		nodes[i] = nil
		nodes[i] = start(old.Name(), addr, []string{nodes[(i+1)%len(nodes)].Addr()}, false)
		clustertest.WaitConverged(t, clusters(nodes))
		callAllPairsTagged(t, nodes, 20, fmt.Sprintf("step%d/", i+1))
		t.Logf("%s upgraded: %+v", old.Name(), m.of(t, old.Name()).Stats())
	}
}
