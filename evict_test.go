package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// TestClusterEvictionRace: 100 logins of one user+device at once, spread
// over 3 nodes, leave exactly one live session cluster-wide, and every
// other one gets the evicted frame and 4000.
func TestClusterEvictionRace(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single_device=%v", single), func(t *testing.T) {
			nodes := nodetest.StartCluster(t, 3, func(i int, s *nodetest.Setup) { s.Cfg.Session.SingleDevice = single })
			const logins = 100
			clients := make([]*testsupport.WSClient, logins)
			var wg sync.WaitGroup
			for i := range logins {
				n := nodes[i%len(nodes)]
				device := "phone"
				if single {
					device = fmt.Sprint("dev", i%7) // other devices: still one session per user
				}
				tok := n.Token(t, "racer", device)
				wg.Go(func() {
					c, _, err := n.TryDial(tok, testsupport.DialOpts{})
					if err != nil {
						t.Errorf("dial %d: %v", i, err)
						return
					}
					clients[i] = c
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			t.Cleanup(func() {
				for _, c := range clients {
					c.Close()
				}
			})
			start := time.Now()
			live := func() int {
				n := 0
				for _, c := range clients {
					select {
					case <-c.Closed():
					default:
						n++
					}
				}
				return n
			}
			testsupport.WaitFor(t, "one live session", func() bool {
				sum := 0
				for _, n := range nodes {
					sum += n.Hub().Len()
				}
				return sum == 1 && live() == 1
			})
			took := time.Since(start)
			t.Logf("%d concurrent logins over %d nodes: one survivor %s after the last login", logins, len(nodes), took)
			if took > time.Second {
				t.Errorf("took %s, want at most 1s", took)
			}
			for i, c := range clients {
				select {
				case <-c.Closed():
					if c.Code != 4000 {
						t.Errorf("client %d closed with %d %q, want 4000", i, c.Code, c.Reason)
					}
					if f := c.Next(t); f["type"] != "evicted" {
						t.Errorf("client %d got %v before 4000, want the evicted frame", i, f)
					}
				default:
				}
			}
			// Every node routes the user to the survivor only.
			var owner string
			for _, n := range nodes {
				if n.Hub().Len() == 1 {
					owner = n.Cfg.Node.Name
				}
			}
			testsupport.WaitFor(t, "tables agree on the survivor", func() bool {
				for _, n := range nodes {
					if o := n.Cluster().Owners("racer"); len(o) != 1 || o[0] != owner {
						return false
					}
				}
				return true
			})
			if out := nodes[0].Send(t, `{"users":["racer"],"data":"you won"}`); out["delivered"] != 1.0 {
				t.Fatalf("send to the survivor: %v", out)
			}
		})
	}
}

// One cross-node eviction reaches the old owner by two paths (the direct
// evict and the delta) but counts, and logs, once: it showed
// wsmesh_evictions_total 2 and two "session evicted" lines in 4 of 5 runs.
func TestCrossNodeEvictionCountedOnce(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	t1, t2 := nodes[0], nodes[1]
	old := t1.Dial(t, t1.Token(t, "u", "phone"), testsupport.DialOpts{})
	nodetest.WaitRoutable(t, nodes, "u", "t1")
	t2.Dial(t, t2.Token(t, "u", "phone"), testsupport.DialOpts{})

	if f := old.Next(t); f["type"] != "evicted" {
		t.Fatalf("old session got %v, want the evicted frame", f)
	}
	if code, _ := old.WaitClose(t); code != 4000 {
		t.Fatalf("old session closed with %d, want 4000", code)
	}
	// Both paths have arrived once t1's table has t2's session: the evict
	// and the delta travel in order on one link.
	nodetest.WaitRoutable(t, nodes, "u", "t2")
	if n := t1.Hub().Stats().Evictions; n != 1 {
		t.Errorf("t1 counted %d evictions, want 1", n)
	}
	if n := t1.Logs.Count(`msg="session evicted"`); n != 1 {
		t.Errorf(`t1 logged "session evicted" %d times, want 1`, n)
	}
	if m := t1.Metrics(t); !strings.Contains(m, "\nwsmesh_evictions_total 1\n") {
		t.Errorf("t1's /metrics lacks wsmesh_evictions_total 1")
	}
}
