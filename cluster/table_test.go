package cluster

import (
	"slices"
	"testing"
)

func TestTableIndexAndDrop(t *testing.T) {
	tb := newTable("a", false)
	tb.mu.Lock()
	a := tb.originLocked("a")
	b := tb.originLocked("b")
	tb.addLocked(a, &Entry{User: "u", Device: "web", Session: "1", Node: "a"})
	tb.addLocked(a, &Entry{User: "u", Device: "app", Session: "2", Node: "a"})
	tb.addLocked(b, &Entry{User: "u", Device: "tv", Session: "1", Node: "b"})
	tb.addLocked(b, &Entry{User: "v", Device: "tv", Session: "2", Node: "b"})
	tb.addLocked(b, &Entry{User: "v", Device: "tv", Session: "2", Node: "b"}) // same id again: replaces
	tb.mu.Unlock()

	if o := tb.owners("u"); !slices.Equal(o, []string{"a", "b"}) {
		t.Fatalf("owners(u) = %v", o)
	}
	if n := tb.size(); n != 4 {
		t.Fatalf("size %d, want 4", n)
	}
	tb.mu.Lock()
	tb.removeLocked(a, "1")
	tb.removeLocked(a, "nope")
	tb.mu.Unlock()
	if o := tb.owners("u"); !slices.Equal(o, []string{"a", "b"}) {
		t.Fatalf("after removing one of two on a: %v", o)
	}
	tb.mu.Lock()
	dropped := tb.dropLocked("b")
	tb.mu.Unlock()
	if dropped != 2 || tb.sessionsOf("b") != 0 {
		t.Fatalf("dropped %d, left %d", dropped, tb.sessionsOf("b"))
	}
	if o := tb.owners("v"); len(o) != 0 {
		t.Fatalf("owners(v) after drop = %v", o)
	}
	if o := tb.owners("u"); !slices.Equal(o, []string{"a"}) {
		t.Fatalf("owners(u) after drop = %v", o)
	}
}
