package cluster

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkReadiness fails unless c's Readiness is ready and its reasons are
// exactly reasons.
func checkReadiness(t *testing.T, c *Cluster, ready bool, reasons ...string) {
	t.Helper()
	gotReady, got := c.Readiness()
	if gotReady != ready || !slices.Equal(got, reasons) {
		t.Fatalf("%s: Readiness() = %v %q, want %v %q", c.Name(), gotReady, got, ready, reasons)
	}
}

// TestReadinessAlone: a node with no seeds, or only its own address among
// them, runs alone by config and is ready at once; before Start and after
// Leave it is not.
func TestReadinessAlone(t *testing.T) {
	c, err := New(Config{NodeName: "solo", Bind: "127.0.0.1:0", LinkKey: testLinkKey})
	if err != nil {
		t.Fatal(err)
	}
	checkReadiness(t, c, false, "cluster not started")
	if err := c.Start(&echoHandler{}); err != nil {
		t.Fatal(err)
	}
	checkReadiness(t, c, true)
	if err := c.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkReadiness(t, c, false, "left the cluster")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := l.Addr().String()
	l.Close()
	own, err := testCluster(t, "own", []string{self}, nil, nil, func(c *Config) { c.Bind = self })
	if err != nil {
		t.Fatal(err)
	}
	checkReadiness(t, own, true)
}

// TestReadinessSeedsDown: a node whose seeds do not answer has not joined
// and says so, naming the seeds.
func TestReadinessSeedsDown(t *testing.T) {
	c, err := testCluster(t, "lonely", []string{"127.0.0.1:1"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkReadiness(t, c, false, "not joined: no seed answered yet (cluster.seeds [127.0.0.1:1])")
}

// TestReadinessNeedsEveryTable: a joiner is ready once it holds a's and
// b's session tables from their current runs; a table missing, or from a
// previous run of its node, makes it unready with a reason naming the
// node, until the node's snapshot comes; a member whose link fails does
// not hold readiness back; once a member is gone, the last node standing
// stays ready.
func TestReadinessNeedsEveryTable(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	a.AddLocal(LocalSession{User: "u", Device: "web", Session: "1", Stamp: a.Now()})
	c, _ := testCluster(t, "c", []string{a.Addr()}, nil, nil)
	waitUntil(t, "c linked with a and b", func() bool { return hasPeer(c, "a") && hasPeer(c, "b") })
	waitUntil(t, "c ready", func() bool { ok, _ := c.Readiness(); return ok })
	if o := c.Owners("u"); !slices.Equal(o, []string{"a"}) {
		t.Fatalf("c ready but routes u to %v, want [a]", o)
	}

	// As if a's snapshot had not come yet: c's copy of a's table is gone.
	c.table.mu.Lock()
	c.table.dropLocked("a")
	c.table.mu.Unlock()
	checkReadiness(t, c, false, "no session table from a yet")
	c.mu.Lock()
	pa := c.peers["a"]
	c.mu.Unlock()
	pa.resync() // asks a for its snapshot: the table from a's run
	waitUntil(t, "a's snapshot back in c's table", func() bool { ok, _ := c.Readiness(); return ok })
	// As if a had restarted: the copy is from a's previous run. (c's link
	// takes only messages with the epoch in a's meta, so the copy's epoch
	// is made old rather than the link's new.)
	c.table.mu.Lock()
	c.table.origins["a"].epoch--
	c.table.mu.Unlock()
	checkReadiness(t, c, false, "no session table from a yet")
	pa.resync()
	waitUntil(t, "a's snapshot of its run back in c's table", func() bool { ok, _ := c.Readiness(); return ok })
	if n := c.table.sessionsOf("a"); n != 1 {
		t.Fatalf("c holds %d sessions of a, want 1", n)
	}

	// A member whose link fails is skipped: /send answers its users
	// unreachable from the copy taken before, or offline if there is none.
	c.table.mu.Lock()
	c.table.dropLocked("b")
	c.table.mu.Unlock()
	checkReadiness(t, c, false, "no session table from b yet")
	c.mu.Lock()
	pb := c.peers["b"]
	c.mu.Unlock()
	pb.setFailing(true)
	checkReadiness(t, c, true)
	pb.setFailing(false)
	pb.resync()
	waitUntil(t, "b's snapshot back in c's table", func() bool { ok, _ := c.Readiness(); return ok })

	// a and b leave: c is the last one standing, joined before: ready.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, x := range []*Cluster{a, b} {
		if err := x.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "c to see a and b gone", func() bool { return !hasPeer(c, "a") && !hasPeer(c, "b") })
	if ok, reasons := c.Readiness(); !ok {
		t.Fatalf("last node standing not ready: %v", strings.Join(reasons, "; "))
	}
}
