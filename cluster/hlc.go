package cluster

import (
	"sync"
	"time"

	"wsmesh/internal/login"
)

// Stamp is a hybrid logical clock reading: Unix milliseconds in the high
// 48 bits, a counter in the low 16. Stamps from one clock strictly increase,
// and a clock that has seen a stamp only issues larger ones.
type Stamp uint64

// Time returns the wall-clock part.
func (s Stamp) Time() time.Time { return time.UnixMilli(int64(s >> 16)) }

// clock is a hybrid logical clock (Kulkarni et al.), safe for concurrent use.
type clock struct {
	mu   sync.Mutex
	last Stamp
	now  func() time.Time // wall clock; time.Now unless a test sets it
}

// Now returns a stamp larger than every stamp issued or observed so far.
func (c *clock) Now() Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := Stamp(c.now().UnixMilli()) << 16
	if wall > c.last {
		c.last = wall
	} else {
		c.last++
	}
	return c.last
}

// Observe advances the clock past a stamp received from another node.
func (c *clock) Observe(s Stamp) {
	c.mu.Lock()
	if s > c.last {
		c.last = s
	}
	c.mu.Unlock()
}

// newer reports whether session a beats b (login.Newer): the larger
// stamp wins, ties broken by node name, then session id.
func newer(a, b *Entry) bool {
	return login.Newer(login.Stamped{Stamp: uint64(a.Stamp), Node: a.Node, Session: a.Session},
		login.Stamped{Stamp: uint64(b.Stamp), Node: b.Node, Session: b.Session})
}
