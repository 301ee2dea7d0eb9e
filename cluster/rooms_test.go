package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// roomsOf renders c's view of room: "node=members" per node with members.
func roomsOf(c *Cluster, room string) string {
	return fmt.Sprint(c.RoomNodes(room))
}

// TestRoomInterest: a node's room counts reach its peers, in order with
// its session deltas (before the link: in its snapshot; after: as
// deltas); a count back to 0 removes the node from the room; a node that
// joins later learns the counts from the snapshot; a node that leaves
// takes its rooms with it.
func TestRoomInterest(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	a.SetLocalRoom("live:1", 2) // before any link: goes in a's snapshot
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	want := fmt.Sprint([]RoomCount{{Room: "live:1", Node: "a", Members: 2}})
	waitUntil(t, "b knows a's room from the snapshot", func() bool { return roomsOf(b, "live:1") == want })

	b.SetLocalRoom("live:1", 5)
	a.SetLocalRoom("live:2", 1)
	a.SetLocalRoom("live:1", 0)
	waitUntil(t, "a's deltas at b", func() bool {
		return roomsOf(b, "live:1") == fmt.Sprint([]RoomCount{{Room: "live:1", Node: "b", Members: 5}}) &&
			roomsOf(b, "live:2") == fmt.Sprint([]RoomCount{{Room: "live:2", Node: "a", Members: 1}})
	})
	waitUntil(t, "b's delta at a", func() bool {
		return roomsOf(a, "live:1") == fmt.Sprint([]RoomCount{{Room: "live:1", Node: "b", Members: 5}})
	})

	c, _ := testCluster(t, "c", []string{a.Addr()}, nil, nil)
	waitUntil(t, "c knows both from their snapshots", func() bool {
		return roomsOf(c, "live:1") == fmt.Sprint([]RoomCount{{Room: "live:1", Node: "b", Members: 5}}) &&
			roomsOf(c, "live:2") == fmt.Sprint([]RoomCount{{Room: "live:2", Node: "a", Members: 1}})
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b's rooms gone from a and c", func() bool { return roomsOf(a, "live:1") == "[]" && roomsOf(c, "live:1") == "[]" })
	if got := roomsOf(c, "live:2"); got != fmt.Sprint([]RoomCount{{Room: "live:2", Node: "a", Members: 1}}) {
		t.Fatalf("c lost a's room: %s", got)
	}
}

// TestRoomCountUnchangedNotAnnounced: setting the count a room has
// already costs no delta.
func TestRoomCountUnchangedNotAnnounced(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	seq := func() uint64 { return a.table.digest("a").Seq }
	a.SetLocalRoom("r", 3)
	before := seq()
	a.SetLocalRoom("r", 3)
	a.SetLocalRoom("other", 0)
	if got := seq(); got != before {
		t.Fatalf("seq moved from %d to %d for unchanged counts", before, got)
	}
	a.SetLocalRoom("r", 0)
	if got := seq(); got != before+1 {
		t.Fatalf("seq %d after a change, want %d", got, before+1)
	}
	if n := a.RoomNodes("r"); n != nil {
		t.Fatalf("room r after its count went to 0: %v", n)
	}
}
