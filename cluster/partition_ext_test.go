package cluster_test

// The cluster under network faults: nodes cut off and healed, nodes that
// vanish, gossip that loses packets. A test cluster here is cluster.Cluster
// nodes on their own (no session hub, no relay), their gossip through one
// faultnet.Net; a relay call stands for a message to a user on the node
// called, and AddLocal and RemoveLocal for its sessions opening and
// closing. The other _ext_test files use it too.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/faultnet"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/clustertest"
)

// node is one member of a test cluster.
type node struct {
	*cluster.Cluster
	relayed *relayLog // what other nodes relayed to it
}

// relayLog is a cluster.Handler that answers every relay call with "ok:"
// and the payload, and keeps the payloads in the order it handled them.
type relayLog struct {
	mu  sync.Mutex
	got []string
}

func (r *relayLog) HandleRelay(_ string, p []byte) []byte {
	r.mu.Lock()
	r.got = append(r.got, string(p))
	r.mu.Unlock()
	return append([]byte("ok:"), p...)
}

func (r *relayLog) Evict(string, string) {}

// payloads returns what was relayed so far, in order.
func (r *relayLog) payloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// startCluster starts n nodes, t1..tn, that join t1, their gossip through
// a new fault net with this seed, with fast gossip timings
// (faultnet.FastGossip), logging debug lines to t.Logf; opts then change
// each node's Config. It waits until every node sees every other alive,
// and has them leave when the test ends.
func startCluster(t testing.TB, n int, seed uint64, opts ...func(*cluster.Config)) ([]*node, *faultnet.Net) {
	t.Helper()
	fn := faultnet.New(seed)
	logs := testsupport.NewLogWriter(t)
	var nodes []*node
	t.Cleanup(func() {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := n.Leave(ctx); err != nil {
				t.Errorf("%s: %v", n.Name(), err)
			}
			cancel()
		}
	})
	for i := range n {
		name := fmt.Sprintf("t%d", i+1)
		cfg := cluster.Config{
			NodeName:       name,
			Bind:           "127.0.0.1:0",
			LinkKey:        cluster.DeriveLinkKey([]byte(testsupport.Secret)),
			RejoinInterval: 500 * time.Millisecond,
			Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name),
			Tune:           faultnet.FastGossip,
			WrapTransport:  fn.Wrap(name),
		}
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		for _, o := range opts {
			o(&cfg)
		}
		c, err := cluster.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nd := &node{Cluster: c, relayed: &relayLog{}}
		if err := c.Start(nd.relayed); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
		if got, want := fn.AddrOf(name), c.Addr(); got != want {
			t.Fatalf("fault net has %s at %q, the node gossips on %q", name, got, want)
		}
	}
	clustertest.WaitConverged(t, clusters(nodes))
	return nodes, fn
}

// patient is a startCluster option for tests of what arrives, not how
// soon: calls get 5s to be answered rather than 750ms, as an ack can be
// late on a busy machine (other packages' tests run beside these).
func patient(c *cluster.Config) { c.CallTimeout = 5 * time.Second }

func clusters(nodes []*node) []*cluster.Cluster {
	out := make([]*cluster.Cluster, len(nodes))
	for i, n := range nodes {
		out[i] = n.Cluster
	}
	return out
}

// connect records a session of user on n, as its hub reports a login, and
// returns its id.
func connect(n *node, user string) string {
	id := user + "@" + n.Name()
	n.AddLocal(cluster.LocalSession{User: user, Device: "web", Session: id, Stamp: n.Now()})
	return id
}

// timedCall relays payload from n to node to and returns the reply, the
// error and how long the call took.
func timedCall(n *node, to, payload string) (string, error, time.Duration) {
	start := time.Now()
	reply, err := n.Call(context.Background(), to, []byte(payload))
	return string(reply), err, time.Since(start)
}

// call relays payload from n to node to and checks the reply.
func call(t *testing.T, n *node, to, payload string) {
	t.Helper()
	reply, err, _ := timedCall(n, to, payload)
	if err != nil || reply != "ok:"+payload {
		t.Fatalf("call %s -> %s %q: %q, %v", n.Name(), to, payload, reply, err)
	}
}

// firstCall relays payload from a to b, checks the reply, and checks that
// it is the only call b's handler has taken.
func firstCall(t *testing.T, a, b *node, payload string) {
	t.Helper()
	call(t, a, b.Name(), payload)
	if got := b.relayed.payloads(); len(got) != 1 || got[0] != payload {
		t.Fatalf("%s handled %q, want only %q from %s", b.Name(), got, payload, a.Name())
	}
}

// callFailsFast checks that a call from n to a node cut off fails, and
// within a second: a send to its users must not hang.
func callFailsFast(t *testing.T, n *node, to, payload string) {
	t.Helper()
	_, err, took := timedCall(n, to, payload)
	t.Logf("call to cut-off %s: %s (%s sees it %s): %v", to, took, n.Name(), clustertest.StateOf(n.Cluster, to), err)
	if err == nil {
		t.Fatalf("call to cut-off %s succeeded", to)
	}
	if took >= time.Second {
		t.Fatalf("call to cut-off %s took %s, want < 1s", to, took)
	}
}

// member returns name as n lists it (zero if it does not).
func member(n *node, name string) cluster.Member {
	for _, m := range n.Members() {
		if m.Name == name {
			return m
		}
	}
	return cluster.Member{}
}

// checkInOrder checks that got is "0", "1", ... up to n-1.
func checkInOrder(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d payloads handled, want %d", len(got), n)
	}
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Fatalf("payload %d handled as %q", i, p)
		}
	}
}

// TestPartitionHealsAndTablesConverge cuts t3 off from t1 and t2, changes
// t3's sessions while it is cut off, heals, and expects the cluster to
// re-join by itself with every table showing t3's new sessions and none of
// its old ones.
func TestPartitionHealsAndTablesConverge(t *testing.T) {
	nodes, fn := startCluster(t, 3, 1)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	all := clusters(nodes)
	connect(t1, "a")
	c := connect(t3, "c")
	clustertest.WaitRoutable(t, all, "a", "t1")
	clustertest.WaitRoutable(t, all, "c", "t3")

	fn.Partition("t1", "t3")
	fn.Partition("t2", "t3")
	cutAt := time.Now()

	// t1 still believes c is on t3: the call must fail fast, not hang.
	callFailsFast(t, t1, "t3", "during partition")

	notAlive := func(n *node, name string) bool {
		st := clustertest.StateOf(n.Cluster, name)
		return st == cluster.StateSuspect || st == cluster.StateDead
	}
	d := testsupport.PollUntil(t, "t1 and t2 to see t3 not alive", testsupport.WaitLimit, func() bool {
		return notAlive(t1, "t3") && notAlive(t2, "t3")
	})
	t.Logf("t1 and t2 see t3 not alive %s after the cut (t1: %s, t2: %s)", d, clustertest.StateOf(t1.Cluster, "t3"), clustertest.StateOf(t2.Cluster, "t3"))
	testsupport.PollUntil(t, "t3 to see t1 and t2 not alive", testsupport.WaitLimit, func() bool {
		return notAlive(t3, "t1") && notAlive(t3, "t2")
	})
	t.Logf("t3 sees t1 and t2 not alive %s after the cut (t1: %s, t2: %s)", time.Since(cutAt), clustertest.StateOf(t3.Cluster, "t1"), clustertest.StateOf(t3.Cluster, "t2"))

	// Change t3's sessions while nobody can hear it.
	t3.RemoveLocal("c", c)
	testsupport.WaitFor(t, "c gone from t3", func() bool { return len(t3.Owners("c")) == 0 })
	connect(t3, "c2")
	testsupport.WaitFor(t, "c2 on t3", func() bool { return slices.Contains(t3.Owners("c2"), "t3") })
	t.Logf("partitioned for %s; fault net: %v", time.Since(cutAt), fn.Stats())

	fn.Heal()
	healAt := time.Now()
	joined := clustertest.WaitConverged(t, all)
	testsupport.PollUntil(t, "tables to converge after heal", testsupport.WaitLimit, func() bool {
		for _, n := range nodes {
			if slices.Contains(n.Owners("c"), "t3") || !slices.Contains(n.Owners("c2"), "t3") {
				return false
			}
		}
		return true
	})
	converged := time.Since(healAt)
	// t1's session "a" never changed, but t3 dropped it when it declared t1
	// dead, and t2 may have too: on heal, t3's queued "t1 is dead" gossip
	// can reach t2 before t1's refutation. t2's new link to t1 then starts
	// its batch numbers at 1 while t1 still expects the old link's next
	// number, so t2's snapshot request waits for a few ack timeouts (see the
	// report: link sequence numbers restart). Here t2 sent t1 only a few
	// batches before, so that is seconds, within testsupport.WaitLimit.
	testsupport.PollUntil(t, "every node to route a to t1 again", testsupport.WaitLimit, func() bool {
		for _, n := range nodes {
			if !slices.Contains(n.Owners("a"), "t1") {
				return false
			}
		}
		return true
	})
	t.Logf("after heal: 3 alive everywhere in %s, c/c2 converged in %s, a routable everywhere in %s", joined, converged, time.Since(healAt))
	for _, n := range nodes {
		if o := n.Owners("c"); len(o) != 0 {
			t.Errorf("%s: Owners(c) = %v after heal, want none", n.Name(), o)
		}
		if o := n.Owners("c2"); fmt.Sprint(o) != "[t3]" {
			t.Errorf("%s: Owners(c2) = %v after heal, want [t3]", n.Name(), o)
		}
		if o := n.Owners("a"); fmt.Sprint(o) != "[t1]" {
			t.Errorf("%s: Owners(a) = %v after heal, want [t1]", n.Name(), o)
		}
	}

	firstCall(t, t1, t3, "after heal")
	firstCall(t, t3, t1, "from t3")
	if m := member(t1, "t3"); m.State != cluster.StateAlive || m.Sessions != 1 {
		t.Fatalf("t1 lists t3 as %+v, want alive with 1 session", m)
	}
}

// TestStoppedNodeUsersOffline makes t2 vanish without leaving, as a crash
// or a pulled cable would: calls to it must fail at once for t1, and t2
// must end up dead with its sessions gone from t1's table.
func TestStoppedNodeUsersOffline(t *testing.T) {
	for _, mode := range []string{"refused", "silent"} {
		t.Run(mode, func(t *testing.T) { testStoppedNodeUsersOffline(t, mode) })
	}
}

// testStoppedNodeUsersOffline: t2 vanishes, its dials refused at once
// (the host is up, wsmesh is not) or hanging (the host is gone).
func testStoppedNodeUsersOffline(t *testing.T, mode string) {
	nodes, fn := startCluster(t, 3, 2)
	t1, t2 := nodes[0], nodes[1]
	connect(t2, "b")
	clustertest.WaitRoutable(t, clusters(nodes), "b", "t2")

	if mode == "silent" {
		fn.Silence("t2")
	} else {
		fn.Isolate("t2")
	}
	cutAt := time.Now()
	callFailsFast(t, t1, "t2", "anyone there?")

	var suspectAfter time.Duration
	deadAfter := testsupport.PollUntil(t, "t1 to list t2 dead", testsupport.WaitLimit, func() bool {
		m := member(t1, "t2")
		if m.Name == "" {
			t.Fatal("t2 missing from t1's members")
		}
		if m.State == cluster.StateSuspect && suspectAfter == 0 {
			suspectAfter = time.Since(cutAt)
		}
		return m.State == cluster.StateDead
	})
	t.Logf("t1 saw t2 suspect after %s, dead after %s; fault net: %v", suspectAfter, deadAfter, fn.Stats())
	if o := t1.Owners("b"); len(o) != 0 {
		t.Fatalf("t1's table still routes b to %v after t2 died", o)
	}
	if m := member(t1, "t2"); m.Sessions != 0 {
		t.Fatalf("t1 lists %+v, want 0 sessions for dead t2", m)
	}
	_, err, took := timedCall(t1, "t2", "still there?")
	if err == nil {
		t.Fatal("call to dead t2 succeeded")
	}
	t.Logf("call to t2 once it is dead: %s: %v", took, err)
}

// TestClusterNoMessageLossUnderPacketLoss drops 10% of gossip packets
// between every pair of nodes; relay calls ride on streams, so every call
// must still succeed, handled in order.
func TestClusterNoMessageLossUnderPacketLoss(t *testing.T) {
	nodes, fn := startCluster(t, 3, 3, patient)
	t1, t3 := nodes[0], nodes[2]

	fn.SetFaultsAll(faultnet.Faults{Loss: 0.10})
	// Gossip is light (a probe per node every 200ms): let the loss bite a
	// few times before, then keep it on during the calls.
	d := testsupport.PollUntil(t, "the fault net to drop a few gossip packets", testsupport.WaitLimit, func() bool { return fn.Stats().Lost >= 3 })
	t.Logf("3 packets lost after %s: %v", d, fn.Stats())
	const n = 500
	start := time.Now()
	for i := range n {
		if reply, err, _ := timedCall(t1, "t3", strconv.Itoa(i)); err != nil || reply != "ok:"+strconv.Itoa(i) {
			t.Fatalf("call %d under packet loss: %q, %v (t1 sees t3 %s); fault net: %v", i, reply, err, clustertest.StateOf(t1.Cluster, "t3"), fn.Stats())
		}
	}
	sent := time.Since(start)
	checkInOrder(t, t3.relayed.payloads(), n)
	t.Logf("%d calls under 10%% packet loss in %s, all handled in order; fault net: %v", n, sent, fn.Stats())
	for _, nd := range nodes {
		for _, m := range nd.Members() {
			if m.State != cluster.StateAlive {
				t.Logf("note: %s sees %s %s under packet loss", nd.Name(), m.Name, m.State)
			}
		}
	}
}
