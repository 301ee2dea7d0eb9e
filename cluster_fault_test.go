package main

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"wsmesh/cluster"
)

// stateOf returns the state in which n's Members lists name ("" if absent).
func stateOf(n *testNode, name string) string {
	for _, m := range n.cluster.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// apiMember returns name's entry in n's GET /cluster answer (nil if absent).
func apiMember(tb testing.TB, n *testNode, name string) map[string]any {
	tb.Helper()
	code, out, _ := n.api(tb, http.MethodGet, "/cluster", "")
	if code != http.StatusOK {
		tb.Fatalf("GET /cluster: %d %v", code, out)
	}
	ms, _ := out["members"].([]any)
	for _, m := range ms {
		if mm, _ := m.(map[string]any); mm["name"] == name {
			return mm
		}
	}
	return nil
}

// timedSend posts /send and returns the answer and how long it took.
func timedSend(tb testing.TB, n *testNode, body string) (map[string]any, time.Duration) {
	tb.Helper()
	start := time.Now()
	out := n.send(tb, body)
	return out, time.Since(start)
}

// newFaultCluster starts n nodes whose gossip goes through one fault net,
// and checks that the fault net knows each node's gossip address.
func newFaultCluster(tb testing.TB, n int, seed uint64) ([]*testNode, *faultNet) {
	tb.Helper()
	fn := newFaultNet(seed)
	nodes := newTestCluster(tb, n, fn.option)
	for _, nd := range nodes {
		if got, want := fn.addrOf(nd.cfg.Node.Name), nd.cluster.Addr(); got != want {
			tb.Fatalf("fault net has %s at %q, the node gossips on %q", nd.cfg.Node.Name, got, want)
		}
	}
	return nodes, fn
}

// TestPartitionHealsAndTablesConverge cuts t3 off from t1 and t2, changes
// t3's sessions while it is cut off, heals, and expects the cluster to
// re-join by itself with every table showing t3's new sessions and none of
// its old ones.
func TestPartitionHealsAndTablesConverge(t *testing.T) {
	nodes, fn := newFaultCluster(t, 3, 1)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	ca := t1.dial(t, t1.token(t, "a", ""), dialOpts{})
	cc := t3.dial(t, t3.token(t, "c", ""), dialOpts{})
	waitRoutable(t, nodes, "a", "t1")
	waitRoutable(t, nodes, "c", "t3")

	fn.partition("t1", "t3")
	fn.partition("t2", "t3")
	cutAt := time.Now()

	// t1 still believes c is on t3: the call must fail fast, not hang.
	out, took := timedSend(t, t1, `{"users":["c"],"data":"during partition"}`)
	t.Logf("send to a user behind the partition: %s (t1 sees t3 %s): %v", took, stateOf(t1, "t3"), out)
	if out["offline"] != 1.0 || out["delivered"] != 0.0 {
		t.Fatalf("send to c on cut-off t3: %v, want offline", out)
	}
	if took >= time.Second {
		t.Fatalf("send to c on cut-off t3 took %s, want < 1s", took)
	}

	notAlive := func(n *testNode, name string) bool {
		st := stateOf(n, name)
		return st == cluster.StateSuspect || st == cluster.StateDead
	}
	d := pollUntil(t, "t1 and t2 to see t3 not alive", waitLimit, func() bool {
		return notAlive(t1, "t3") && notAlive(t2, "t3")
	})
	t.Logf("t1 and t2 see t3 not alive %s after the cut (t1: %s, t2: %s)", d, stateOf(t1, "t3"), stateOf(t2, "t3"))
	pollUntil(t, "t3 to see t1 and t2 not alive", waitLimit, func() bool {
		return notAlive(t3, "t1") && notAlive(t3, "t2")
	})
	t.Logf("t3 sees t1 and t2 not alive %s after the cut (t1: %s, t2: %s)", time.Since(cutAt), stateOf(t3, "t1"), stateOf(t3, "t2"))

	// Change t3's sessions while nobody can hear it.
	cc.close()
	waitFor(t, "c gone from t3", func() bool { return t3.hub.Len() == 0 && len(t3.cluster.Owners("c")) == 0 })
	cc2 := t3.dial(t, t3.token(t, "c2", ""), dialOpts{})
	waitFor(t, "c2 on t3", func() bool { return slices.Contains(t3.cluster.Owners("c2"), "t3") })
	t.Logf("partitioned for %s; fault net: %v", time.Since(cutAt), fn.snapshot())

	fn.heal()
	healAt := time.Now()
	joined := waitConverged(t, nodes)
	pollUntil(t, "tables to converge after heal", waitLimit, func() bool {
		for _, n := range nodes {
			if slices.Contains(n.cluster.Owners("c"), "t3") || !slices.Contains(n.cluster.Owners("c2"), "t3") {
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
	// batches before, so that is seconds, within waitLimit.
	pollUntil(t, "every node to route a to t1 again", waitLimit, func() bool {
		for _, n := range nodes {
			if !slices.Contains(n.cluster.Owners("a"), "t1") {
				return false
			}
		}
		return true
	})
	t.Logf("after heal: 3 alive everywhere in %s, c/c2 converged in %s, a routable everywhere in %s", joined, converged, time.Since(healAt))
	for _, n := range nodes {
		if o := n.cluster.Owners("c"); len(o) != 0 {
			t.Errorf("%s: Owners(c) = %v after heal, want none", n.cfg.Node.Name, o)
		}
		if o := n.cluster.Owners("c2"); fmt.Sprint(o) != "[t3]" {
			t.Errorf("%s: Owners(c2) = %v after heal, want [t3]", n.cfg.Node.Name, o)
		}
		if o := n.cluster.Owners("a"); fmt.Sprint(o) != "[t1]" {
			t.Errorf("%s: Owners(a) = %v after heal, want [t1]", n.cfg.Node.Name, o)
		}
	}

	out = t1.send(t, `{"users":["c2"],"data":"after heal"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("send to c2 after heal: %v", out)
	}
	if f := cc2.next(t); f["id"] != out["id"] || f["data"] != "after heal" {
		t.Fatalf("c2 got %v, want the message %v", f, out["id"])
	}
	if out := t1.send(t, `{"users":["c"],"data":"stale?"}`); out["offline"] != 1.0 || out["delivered"] != 0.0 {
		t.Fatalf("send to c after heal: %v, want offline", out)
	}
	out = t3.send(t, `{"users":["a"],"data":"from t3"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("send on t3 to a on t1 after heal: %v", out)
	}
	if f := ca.next(t); f["id"] != out["id"] {
		t.Fatalf("a got %v, want the message %v", f, out["id"])
	}
	if m := apiMember(t, t1, "t3"); m["state"] != "alive" || m["sessions"] != 1.0 {
		t.Fatalf("t1's /cluster shows t3 as %v, want alive with 1 session", m)
	}
}

// TestStoppedNodeUsersOffline makes t2 vanish without leaving, as a crash
// or a pulled cable would: its users must be offline at once for t1, and
// t2 must end up dead with its sessions gone from t1's table.
func TestStoppedNodeUsersOffline(t *testing.T) {
	for _, mode := range []string{"refused", "silent"} {
		t.Run(mode, func(t *testing.T) { testStoppedNodeUsersOffline(t, mode) })
	}
}

// testStoppedNodeUsersOffline: t2 vanishes, its dials refused at once
// (the host is up, wsmesh is not) or hanging (the host is gone).
func testStoppedNodeUsersOffline(t *testing.T, mode string) {
	nodes, fn := newFaultCluster(t, 3, 2)
	t1, t2 := nodes[0], nodes[1]
	t2.dial(t, t2.token(t, "b", ""), dialOpts{})
	waitRoutable(t, nodes, "b", "t2")

	if mode == "silent" {
		fn.silence("t2")
	} else {
		fn.isolate("t2")
	}
	cutAt := time.Now()
	out, took := timedSend(t, t1, `{"users":["b"],"data":"anyone there?"}`)
	t.Logf("send to a user on a vanished node: %s (t1 sees t2 %s): %v", took, stateOf(t1, "t2"), out)
	if out["offline"] != 1.0 || out["delivered"] != 0.0 {
		t.Fatalf("send to b on vanished t2: %v, want offline", out)
	}
	if took >= time.Second {
		t.Fatalf("send to b on vanished t2 took %s, want < 1s", took)
	}

	var suspectAfter time.Duration
	deadAfter := pollUntil(t, "t1's /cluster to show t2 dead", waitLimit, func() bool {
		m := apiMember(t, t1, "t2")
		if m == nil {
			t.Fatal("t2 missing from t1's /cluster")
		}
		if m["state"] == "suspect" && suspectAfter == 0 {
			suspectAfter = time.Since(cutAt)
		}
		return m["state"] == "dead"
	})
	t.Logf("t1 saw t2 suspect after %s, dead after %s; fault net: %v", suspectAfter, deadAfter, fn.snapshot())
	if o := t1.cluster.Owners("b"); len(o) != 0 {
		t.Fatalf("t1's table still routes b to %v after t2 died", o)
	}
	if m := apiMember(t, t1, "t2"); m["sessions"] != 0.0 {
		t.Fatalf("t1's /cluster: %v, want 0 sessions for dead t2", m)
	}
	out, took = timedSend(t, t1, `{"users":["b"],"data":"still there?"}`)
	if out["offline"] != 1.0 {
		t.Fatalf("send to b after t2 died: %v", out)
	}
	t.Logf("send to b once t2 is dead: %s", took)
}

// TestClusterNoMessageLossUnderPacketLoss drops 10% of gossip packets
// between every pair of nodes; relay traffic rides on streams, so every
// message must still arrive, in order.
func TestClusterNoMessageLossUnderPacketLoss(t *testing.T) {
	nodes, fn := newFaultCluster(t, 3, 3)
	t1, t3 := nodes[0], nodes[2]
	c := t3.dial(t, t3.token(t, "pl", ""), dialOpts{})
	waitRoutable(t, nodes, "pl", "t3")

	fn.setFaultsAll(packetFaults{Loss: 0.10})
	// Gossip is light (a probe per node every 200ms): let the loss bite a
	// few times before, then keep it on during the sends.
	d := pollUntil(t, "the fault net to drop a few gossip packets", waitLimit, func() bool { return fn.snapshot().Lost >= 3 })
	t.Logf("3 packets lost after %s: %v", d, fn.snapshot())
	const n = 500
	start := time.Now()
	for i := range n {
		if out := t1.send(t, fmt.Sprintf(`{"users":["pl"],"data":%d}`, i)); out["delivered"] != 1.0 {
			t.Fatalf("send %d under packet loss: %v (t1 sees t3 %s); fault net: %v", i, out, stateOf(t1, "t3"), fn.snapshot())
		}
	}
	sent := time.Since(start)
	for i := range n {
		if f := c.next(t); f["data"] != float64(i) {
			t.Fatalf("message %d arrived as %v", i, f["data"])
		}
	}
	st := fn.snapshot()
	t.Logf("%d sends under 10%% packet loss in %s, all delivered in order; fault net: %v", n, sent, st)
	for _, nd := range nodes {
		for _, m := range nd.cluster.Members() {
			if m.State != cluster.StateAlive {
				t.Logf("note: %s sees %s %s under packet loss", nd.cfg.Node.Name, m.Name, m.State)
			}
		}
	}
}
