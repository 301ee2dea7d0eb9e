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
