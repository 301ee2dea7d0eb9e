package main

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestClusterEvictionRace: 100 logins of one user+device at once, spread
// over 3 nodes, leave exactly one live session cluster-wide, and every
// other one gets the evicted frame and 4000.
func TestClusterEvictionRace(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single_device=%v", single), func(t *testing.T) {
			nodes := newTestCluster(t, 3, func(i int, h *testConfigHooks) { h.cfg.Session.SingleDevice = single })
			const logins = 100
			clients := make([]*wsClient, logins)
			var wg sync.WaitGroup
			for i := range logins {
				n := nodes[i%len(nodes)]
				device := "phone"
				if single {
					device = fmt.Sprint("dev", i%7) // other devices: still one session per user
				}
				tok := n.token(t, "racer", device)
				wg.Go(func() {
					c, _, err := n.tryDial(tok, dialOpts{})
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
					c.close()
				}
			})
			start := time.Now()
			live := func() int {
				n := 0
				for _, c := range clients {
					select {
					case <-c.closed:
					default:
						n++
					}
				}
				return n
			}
			waitFor(t, "one live session", func() bool {
				sum := 0
				for _, n := range nodes {
					sum += n.hub.Len()
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
				case <-c.closed:
					if c.code != 4000 {
						t.Errorf("client %d closed with %d %q, want 4000", i, c.code, c.reason)
					}
					if f := c.next(t); f["type"] != "evicted" {
						t.Errorf("client %d got %v before 4000, want the evicted frame", i, f)
					}
				default:
				}
			}
			// Every node routes the user to the survivor only.
			var owner string
			for _, n := range nodes {
				if n.hub.Len() == 1 {
					owner = n.cfg.Node.Name
				}
			}
			waitFor(t, "tables agree on the survivor", func() bool {
				for _, n := range nodes {
					if o := n.cluster.Owners("racer"); len(o) != 1 || o[0] != owner {
						return false
					}
				}
				return true
			})
			if out := nodes[0].send(t, `{"users":["racer"],"data":"you won"}`); out["delivered"] != 1.0 {
				t.Fatalf("send to the survivor: %v", out)
			}
		})
	}
}
