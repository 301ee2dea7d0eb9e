package cluster_test

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/testsupport"
)

// TestClusterOrderKept: many calls from one node to another, one after
// another, are handled there in the order they were made.
func TestClusterOrderKept(t *testing.T) {
	// This is about order, not failure detection: memberlist's own timings,
	// which a busy machine does not trip (with FastGossip's, t2 was seen to
	// mark t1 failed amid thousands of link streams a second on 2 CPUs
	// under -race), patient calls, and no debug line per call.
	steady := func(c *cluster.Config) {
		patient(c)
		c.Tune = nil
		c.Logger = slog.New(slog.NewTextHandler(testsupport.NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", c.NodeName)
	}
	nodes, _ := startCluster(t, 2, 4, steady)
	a, b := nodes[0], nodes[1]
	const n = 10000
	start := time.Now()
	for i := range n {
		if reply, err, _ := timedCall(a, "t2", strconv.Itoa(i)); err != nil || reply != "ok:"+strconv.Itoa(i) {
			t.Fatalf("call %d: %q, %v", i, reply, err)
		}
	}
	t.Logf("%d sequential cross-node calls in %s", n, time.Since(start))
	checkInOrder(t, b.relayed.payloads(), n)
}
