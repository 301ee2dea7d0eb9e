package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// evictionsOf returns the evictions h was asked for.
func evictionsOf(h Handler) []string {
	eh := h.(*echoHandler)
	eh.mu.Lock()
	defer eh.mu.Unlock()
	return slices.Clone(eh.evicted)
}

// TestCrossNodeEvictionOnce: a login on a that replaces an older one on b
// reaches b twice, as a delta and as a direct evict; b has its session
// evicted once, and a nothing.
func TestCrossNodeEvictionOnce(t *testing.T) {
	var logB syncBuffer
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, &logB)
	waitUntil(t, "linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	b.AddLocal(LocalSession{User: "u", Device: "phone", Session: "old", Stamp: b.Now()})
	waitUntil(t, "a knows b's session", func() bool { return len(a.Owners("u")) == 1 })

	a.AddLocal(LocalSession{User: "u", Device: "phone", Session: "new", Stamp: a.Now()})
	// Queued after the delta and the evict on the same ordered link: when
	// it is answered, b has handled both.
	if _, err := a.Call(context.Background(), "b", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := evictionsOf(b.handler); !slices.Equal(got, []string{"u/old"}) {
		t.Fatalf("b evicted %v, want [u/old] once", got)
	}
	if got := evictionsOf(a.handler); len(got) != 0 {
		t.Fatalf("a evicted %v, want nothing", got)
	}
	if n := strings.Count(logB.String(), "newer login of the same key on another node: evicting"); n != 1 {
		t.Fatalf("b logged the eviction %d times, want once", n)
	}
	// b's own copy of the cluster agrees: u is on a and b until b's
	// session closes (the hub reports it through RemoveLocal).
	b.RemoveLocal("u", "old")
	waitUntil(t, "a routes u to a only", func() bool { return strings.Join(a.Owners("u"), ",") == "a" })
}

// TestLateOlderLoginLosesAtOnce: a login accepted here that is older than
// one the table knows on another node is evicted at once, here, and the
// newer one is left alone.
func TestLateOlderLoginLosesAtOnce(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	early := a.Now()
	b.AddLocal(LocalSession{User: "u", Device: "phone", Session: "newer", Stamp: a.Now()}) // a's clock: surely later
	waitUntil(t, "a knows b's session", func() bool { return len(a.Owners("u")) == 1 })
	a.AddLocal(LocalSession{User: "u", Device: "phone", Session: "late", Stamp: uint64(early)})
	if got := evictionsOf(a.handler); !slices.Equal(got, []string{"u/late"}) {
		t.Fatalf("a evicted %v, want [u/late]", got)
	}
	if _, err := a.Call(context.Background(), "b", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := evictionsOf(b.handler); len(got) != 0 {
		t.Fatalf("b evicted %v, want nothing", got)
	}
}

// TestEvictionsLocked: the table settles each session against the
// others of its key on other nodes, and hands each of this node's losers
// out once.
func TestEvictionsLocked(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprint("single_device=", single), func(t *testing.T) {
			tb := newTable("a", single)
			tb.mu.Lock()
			defer tb.mu.Unlock()
			add := func(node, id, device string, stamp Stamp) *Entry {
				e := &Entry{User: "u", Device: device, Session: id, Node: node, Stamp: stamp}
				tb.addLocked(tb.originLocked(node), e)
				return e
			}
			ids := func(es []*Entry) string {
				var s []string
				for _, e := range es {
					s = append(s, e.Node+"/"+e.Session)
				}
				return strings.Join(s, ",")
			}
			add("a", "1", "phone", 10)
			a2 := add("a", "2", "phone", 20) // the hub settled a1 against a2: not the table's business
			if here, elsewhere := tb.evictionsLocked(a2); len(here)+len(elsewhere) != 0 {
				t.Fatalf("two logins on this node: here %s, elsewhere %s; want none", ids(here), ids(elsewhere))
			}
			b1 := add("b", "1", "phone", 15) // newer than a1, older than a2
			if here, elsewhere := tb.evictionsLocked(b1); ids(here) != "a/1" || len(elsewhere) != 0 {
				t.Fatalf("b/1 added: here %s, elsewhere %s; want a/1 here", ids(here), ids(elsewhere))
			}
			if here, _ := tb.evictionsLocked(b1); len(here) != 0 {
				t.Fatalf("b/1 settled again: here %s, want nothing: a/1 was handed out already", ids(here))
			}
			a3 := add("a", "3", "phone", 30)
			if here, elsewhere := tb.evictionsLocked(a3); len(here) != 0 || ids(elsewhere) != "b/1" {
				t.Fatalf("a/3 added: here %s, elsewhere %s; want b/1 elsewhere", ids(here), ids(elsewhere))
			}
			c1 := add("c", "1", "tablet", 40) // another device: competes only with single_device
			here, _ := tb.evictionsLocked(c1)
			want := ""
			if single {
				want = "a/2,a/3"
			}
			if ids(here) != want {
				t.Fatalf("c/1 (tablet) added: here %s, want %q", ids(here), want)
			}
		})
	}
}

// TestConcurrentAddLocal: AddLocal calls racing on one node, of logins
// older than one the table knows on another node, each lose once, at once.
func TestConcurrentAddLocal(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	stamps := make([]uint64, 32)
	for i := range stamps {
		stamps[i] = a.Now()
	}
	b.AddLocal(LocalSession{User: "u", Device: "d", Session: "b", Stamp: a.Now()}) // newer than them all
	waitUntil(t, "a knows b's session", func() bool { return len(a.Owners("u")) == 1 })
	var wg sync.WaitGroup
	for i, s := range stamps {
		wg.Go(func() { a.AddLocal(LocalSession{User: "u", Device: "d", Session: fmt.Sprint(i), Stamp: s}) })
	}
	wg.Wait()
	got := evictionsOf(a.handler)
	slices.Sort(got)
	if len(got) != len(stamps) || len(slices.Compact(slices.Clone(got))) != len(stamps) {
		t.Fatalf("a evicted %v, want each of its %d logins once", got, len(stamps))
	}
	if _, err := a.Call(context.Background(), "b", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := evictionsOf(b.handler); len(got) != 0 {
		t.Fatalf("b evicted %v, want nothing", got)
	}
}
