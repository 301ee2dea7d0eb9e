package cluster

import (
	"testing"
	"time"
)

func TestClockMonotonicAndObserves(t *testing.T) {
	wall := time.UnixMilli(1_000_000)
	c := clock{now: func() time.Time { return wall }}
	a := c.Now()
	b := c.Now()
	if b <= a {
		t.Fatalf("same millisecond: %d then %d, want increasing", a, b)
	}
	wall = wall.Add(-time.Second) // the wall clock steps back
	if s := c.Now(); s <= b {
		t.Fatalf("after the wall clock stepped back: %d, want > %d", s, b)
	}
	remote := Stamp(time.UnixMilli(5_000_000).UnixMilli()) << 16
	c.Observe(remote)
	if s := c.Now(); s <= remote {
		t.Fatalf("after observing %d: %d", remote, s)
	}
	if got := remote.Time(); !got.Equal(time.UnixMilli(5_000_000)) {
		t.Fatalf("Time() = %v", got)
	}
}

func TestNewerOrder(t *testing.T) {
	cases := []struct {
		name string
		a, b Entry
		want bool
	}{
		{"larger stamp wins", Entry{Stamp: 2, Node: "a"}, Entry{Stamp: 1, Node: "z"}, true},
		{"smaller stamp loses", Entry{Stamp: 1, Node: "z"}, Entry{Stamp: 2, Node: "a"}, false},
		{"tie: node name", Entry{Stamp: 1, Node: "b"}, Entry{Stamp: 1, Node: "a"}, true},
		{"tie: session id", Entry{Stamp: 1, Node: "a", Session: "2"}, Entry{Stamp: 1, Node: "a", Session: "1"}, true},
		{"identical", Entry{Stamp: 1, Node: "a", Session: "1"}, Entry{Stamp: 1, Node: "a", Session: "1"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := newer(&tc.a, &tc.b); got != tc.want {
				t.Fatalf("newer = %v, want %v", got, tc.want)
			}
		})
	}
}
