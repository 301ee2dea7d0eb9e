package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// setLingerForTest has the links made from now on linger d (deltaLinger)
// until the test ends. Call it before the test's clusters start: their
// Leave, registered after, runs before it is undone.
func setLingerForTest(t *testing.T, d time.Duration) {
	t.Helper()
	lingerForTest.Store(int64(d))
	t.Cleanup(func() { lingerForTest.Store(0) })
}

// linkedPair starts a and b, joined, and waits until each holds the
// other's table.
func linkedPair(t *testing.T) (a, b *Cluster) {
	t.Helper()
	a, _ = testCluster(t, "a", nil, nil, nil)
	b, _ = testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "a and b linked and synced", func() bool {
		okA, _ := a.Readiness()
		okB, _ := b.Readiness()
		return okA && okB
	})
	return a, b
}

// TestDeltasLingerIntoOneBatch: deltas that may wait (disconnects)
// queued alone wait (deltaLinger) and share one batch; a call queued
// meanwhile does not wait for the linger, and takes the deltas along: one
// batch carries all of them and the call. Without the linger the first
// delta goes alone at once.
func TestDeltasLingerIntoOneBatch(t *testing.T) {
	setLingerForTest(t, time.Hour) // only the call can end it
	a, b := linkedPair(t)
	const n = 20
	for i := range n { // connects are urgent: they go at once
		a.AddLocal(LocalSession{User: fmt.Sprintf("u%d", i), Device: "web", Session: fmt.Sprintf("s%d", i), Stamp: a.Now()})
	}
	waitUntil(t, "b holds a's sessions", func() bool { return b.table.sessionsOf("a") == n })
	before := a.Stats()
	for i := range n {
		a.RemoveLocal(fmt.Sprintf("u%d", i), fmt.Sprintf("s%d", i))
		if i == 0 {
			// Without a linger the first delta goes alone at once; with
			// it, it does not go, however long we look.
			stillAway(t, 200*time.Millisecond, func() bool { return b.table.sessionsOf("a") == n })
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	reply, err := a.Call(ctx, "b", []byte("x"))
	if err != nil || string(reply) != "re:a:x" {
		t.Fatalf("call: %q, %v", reply, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("call took %s behind lingering deltas", took)
	}
	after := a.Stats()
	if got := after.Batches - before.Batches; got != 1 {
		t.Errorf("%d batches, want 1 (the deltas lingered, the call took them along)", got)
	}
	if got := after.Items - before.Items; got != n+1 {
		t.Errorf("%d items, want %d deltas and the call", got, n)
	}
	waitUntil(t, "b dropped a's sessions", func() bool { return b.table.sessionsOf("a") == 0 })
}

// TestUrgentDeltasDoNotLinger: a connect, and a room's first member, go at
// once whatever the linger, taking the lingering deltas queued before
// them along (in order); a room count that stays above zero lingers.
func TestUrgentDeltasDoNotLinger(t *testing.T) {
	setLingerForTest(t, time.Hour)
	a, b := linkedPair(t)
	a.AddLocal(LocalSession{User: "old", Device: "web", Session: "old", Stamp: a.Now()})
	waitUntil(t, "b holds old", func() bool { return len(b.Owners("old")) == 1 })
	a.RemoveLocal("old", "old") // lingers, an hour
	stillAway(t, 100*time.Millisecond, func() bool { return len(b.Owners("old")) == 1 })
	a.AddLocal(LocalSession{User: "new", Device: "web", Session: "new", Stamp: a.Now()})
	waitUntil(t, "b holds new and dropped old", func() bool { return len(b.Owners("new")) == 1 && len(b.Owners("old")) == 0 })

	a.SetLocalRoom("r", 1)
	waitUntil(t, "b knows a's room", func() bool { return len(b.RoomNodes("r")) == 1 })
	a.SetLocalRoom("r", 2) // not urgent: lingers
	stillAway(t, 100*time.Millisecond, func() bool { return b.RoomNodes("r")[0].Members == 1 })
}

// stillAway fails the test if cond turns false within d. It asserts that
// nothing happens for d, and synchronises nothing.
func stillAway(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if !cond() {
			t.Fatalf("happened within %s", d)
		}
		select {
		case <-tick.C:
		case <-end.C:
			return
		}
	}
}

// TestLingerEnds: a delta that may wait, queued alone, goes out once it
// has lingered, not before and not never.
func TestLingerEnds(t *testing.T) {
	const linger = 100 * time.Millisecond
	setLingerForTest(t, linger)
	a, b := linkedPair(t)
	a.AddLocal(LocalSession{User: "u", Device: "web", Session: "s", Stamp: a.Now()})
	waitUntil(t, "b holds a's session", func() bool { return b.table.sessionsOf("a") == 1 })
	start := time.Now()
	a.RemoveLocal("u", "s")
	waitUntil(t, "b dropped a's session", func() bool { return b.table.sessionsOf("a") == 0 })
	if took := time.Since(start); took < linger {
		t.Errorf("the delta arrived after %s, before its linger of %s ended", took, linger)
	}
}

// TestDigestBehindOnlyIfStill: a push/pull digest ahead of this node's
// copy of the peer's table does not ask for a snapshot at once (the
// deltas may be in flight); the next digest does, if the copy has not
// reached the seq the previous one named and that one is a CallTimeout
// old.
func TestDigestBehindOnlyIfStill(t *testing.T) {
	p := &peer{c: &Cluster{cfg: Config{CallTimeout: time.Hour}}}
	if p.behindDigest(5, 10) {
		t.Fatal("first digest ahead: asked at once")
	}
	if p.behindDigest(7, 12) {
		t.Fatal("asked before a CallTimeout passed")
	}
	p.digestAt = time.Now().Add(-2 * time.Hour) // the digest of seq 12 came long ago
	if !p.behindDigest(11, 15) {
		t.Fatal("still behind the previous digest's seq a CallTimeout later: not asked")
	}
	p.digestAt = time.Now().Add(-2 * time.Hour)
	if p.behindDigest(15, 20) {
		t.Fatal("caught up with the previous digest's seq: asked anyway")
	}
}
