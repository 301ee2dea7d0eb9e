package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/cluster"
	"wsmesh/config"
)

// fastGossip makes failure detection quick enough for tests.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = time.Second
	c.DeadNodeReclaimTime = time.Second
}

// newTestCluster starts n nodes (t1..tn) that join the first one, and
// waits until every node sees every other alive.
func newTestCluster(tb testing.TB, n int, opts ...func(i int, c *testConfigHooks)) []*testNode {
	tb.Helper()
	var nodes []*testNode
	for i := range n {
		cfg := testConfig(tb)
		cfg.Node.Name = fmt.Sprintf("t%d", i+1)
		if i > 0 {
			cfg.Cluster.Seeds = []string{nodes[0].cluster.Addr()}
		}
		h := &testConfigHooks{hooks: hooks{tune: fastGossip, rejoin: 500 * time.Millisecond}, cfg: cfg}
		for _, o := range opts {
			o(i, h)
		}
		nodes = append(nodes, startNodeHooks(tb, cfg, h.hooks))
	}
	waitConverged(tb, nodes)
	return nodes
}

// testConfigHooks is what a newTestCluster option may change for node i.
type testConfigHooks struct {
	hooks
	cfg *config.Config
}

// waitConverged waits until every node lists every node alive, and
// returns how long that took.
func waitConverged(tb testing.TB, nodes []*testNode) time.Duration {
	tb.Helper()
	return pollUntil(tb, "every node to see every node alive", waitLimit, func() bool {
		for _, a := range nodes {
			alive := 0
			for _, m := range a.cluster.Members() {
				if m.State == cluster.StateAlive {
					alive++
				}
			}
			if alive != len(nodes) {
				return false
			}
		}
		return true
	})
}

// waitRoutable waits until every node's table knows user's session on owner.
func waitRoutable(tb testing.TB, nodes []*testNode, user, owner string) {
	tb.Helper()
	waitFor(tb, user+" routable everywhere", func() bool {
		for _, n := range nodes {
			found := false
			for _, o := range n.cluster.Owners(user) {
				found = found || o == owner
			}
			if !found {
				return false
			}
		}
		return true
	})
}

func TestClusterSendAcrossNodes(t *testing.T) {
	nodes := newTestCluster(t, 3)
	a, b := nodes[0], nodes[1]
	c := b.dial(t, b.token(t, "42", "web"), dialOpts{})
	waitRoutable(t, nodes, "42", "t2")

	out := a.send(t, `{"users":["42","nobody"],"data":{"via":"t1"}}`)
	if out["delivered"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("send on t1: %v", out)
	}
	res := out["results"].([]any)[0].(map[string]any)
	if res["node"] != "t2" || res["device"] != "web" || res["status"] != "delivered" {
		t.Fatalf("result %v, want delivered by t2", res)
	}
	if f := c.next(t); f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[via:t1]" {
		t.Fatalf("client on t2 got %v", f)
	}
	code, cl, _ := a.api(t, "GET", "/cluster", "")
	if code != 200 || cl["table_size"] != 1.0 || len(cl["members"].([]any)) != 3 {
		t.Fatalf("/cluster on t1: %v", cl)
	}
	metrics := a.metrics(t)
	for _, want := range []string{`wsmesh_members{state="alive"} 3`, `wsmesh_relay_forward_seconds_count{result="ok"} 1`, "wsmesh_table_sessions 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("t1's /metrics lacks %q", want)
		}
	}
}

func TestClusterOrderKept(t *testing.T) {
	quiet := func(i int, h *testConfigHooks) { h.cfg.Log.Level = "info" } // no debug line per send
	nodes := newTestCluster(t, 2, quiet)
	a, b := nodes[0], nodes[1]
	c := b.dial(t, b.token(t, "o", ""), dialOpts{})
	waitRoutable(t, nodes, "o", "t2")
	const n = 10000
	start := time.Now()
	for i := range n {
		if out := a.send(t, fmt.Sprintf(`{"users":["o"],"data":%d}`, i)); out["delivered"] != 1.0 {
			t.Fatalf("send %d: %v", i, out)
		}
	}
	t.Logf("%d sequential cross-node sends in %s", n, time.Since(start))
	for i := range n {
		if f := c.next(t); f["data"] != float64(i) {
			t.Fatalf("message %d arrived as %v", i, f["data"])
		}
	}
}
