package cluster

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

// TestSnapshotAppliedInChunks: a peer's snapshot replaces what the table
// held of it only once its last chunk is applied: meanwhile the old copy's
// sessions that no chunk named yet are still found, the new ones are found
// as their chunk is applied, and the origin keeps its old seq. A chunk out
// of order drops the snapshot and asks the peer for one from the start; a
// snapshot from an earlier run of the peer is skipped.
func TestSnapshotAppliedInChunks(t *testing.T) {
	c, err := New(Config{NodeName: "me", LinkKey: testLinkKey, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c.handler = &echoHandler{}
	c.mu.Lock()
	p := newPeer(c, &memberlist.Node{Name: "p"}, 5)
	c.mu.Unlock()
	tb := c.table
	entry := func(user, session string) *Entry { return &Entry{User: user, Device: "web", Session: session} }
	tb.mu.Lock()
	o := tb.originLocked("p")
	o.epoch, o.seq = 5, 10
	for _, e := range []*Entry{entry("u1", "s1"), entry("u2", "s2")} {
		e.Node = "p"
		tb.addLocked(o, e)
	}
	tb.mu.Unlock()
	owned := func(user string) bool { return slices.Equal(c.Owners(user), []string{"p"}) }

	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 20, Index: 0, More: true, Entries: []*Entry{entry("u2", "s2"), entry("u3", "s3")}})
	if !owned("u1") || !owned("u2") || !owned("u3") || tb.sessionsOf("p") != 3 {
		t.Fatalf("after chunk 0: u1 %v u2 %v u3 %v, %d sessions; want all on p, 3", c.Owners("u1"), c.Owners("u2"), c.Owners("u3"), tb.sessionsOf("p"))
	}
	if d := tb.digest("p"); d.Epoch != 5 || d.Seq != 10 {
		t.Fatalf("half applied: digest %+v, want the old seq 10", d)
	}
	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 20, Index: 1, Entries: []*Entry{entry("u4", "s4")}})
	if owned("u1") || !owned("u2") || !owned("u4") || tb.sessionsOf("p") != 3 {
		t.Fatalf("after the last chunk: u1 %v u2 %v u4 %v, %d sessions", c.Owners("u1"), c.Owners("u2"), c.Owners("u4"), tb.sessionsOf("p"))
	}
	if d := tb.digest("p"); d.Seq != 20 || tb.origins["p"].stale != nil || p.syncing.Load() {
		t.Fatalf("applied: digest %+v, stale %v, syncing %v", d, tb.origins["p"].stale, p.syncing.Load())
	}

	// A chunk out of order: dropped, and a snapshot from the start asked
	// for, once however many more come.
	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 30, Index: 3, Entries: []*Entry{entry("u5", "s5")}})
	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 30, Index: 2, Entries: []*Entry{entry("u5", "s5")}})
	if owned("u5") || c.stats.snapshotsAbandoned.Load() != 0 {
		t.Fatalf("chunk 2 alone applied: u5 %v", c.Owners("u5"))
	}
	p.mu.Lock()
	asked := 0
	for _, it := range p.queue.items {
		if m, _ := decodeSnapshotReq(it.Body); it.Kind == kindSnapshotReq && m.Restart {
			asked++
		}
	}
	p.mu.Unlock()
	if asked != 1 {
		t.Fatalf("asked %d times for a snapshot from the start, want once", asked)
	}

	// Half a snapshot, then a new one: what the first added is replaced too.
	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 40, Index: 0, More: true, Entries: []*Entry{entry("u6", "s6")}})
	p.handleSnapshot(snapshotMsg{Epoch: 5, Seq: 41, Index: 0, Entries: []*Entry{entry("u7", "s7")}})
	if owned("u2") || owned("u6") || !owned("u7") || tb.sessionsOf("p") != 1 {
		t.Fatalf("after a restarted snapshot: u2 %v u6 %v u7 %v, %d sessions", c.Owners("u2"), c.Owners("u6"), c.Owners("u7"), tb.sessionsOf("p"))
	}
	if n := c.stats.snapshotsAbandoned.Load(); n != 1 {
		t.Fatalf("%d snapshots abandoned, want 1", n)
	}

	// From an earlier run of p: skipped, chunks and all.
	p.handleSnapshot(snapshotMsg{Epoch: 4, Seq: 99, Index: 0, More: true, Entries: []*Entry{entry("u8", "s8")}})
	p.handleSnapshot(snapshotMsg{Epoch: 4, Seq: 99, Index: 1, Entries: []*Entry{entry("u9", "s9")}})
	if owned("u8") || owned("u9") || !owned("u7") {
		t.Fatal("a snapshot of an earlier run applied")
	}
}
