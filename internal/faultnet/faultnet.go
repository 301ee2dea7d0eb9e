// Package faultnet injects network faults between the nodes of an
// in-process test cluster, in the spirit of memberlist's MockTransport but
// over the real NetTransport: each node's memberlist transport is wrapped
// (Net.Wrap, for cluster.Config.WrapTransport) and the wrappers consult one
// shared Net before they send. Tests only.
//
// Faults are applied on the sending side only (every node is wrapped), per
// directed pair of node names:
//   - cut (Partition, Isolate): packets to the other node vanish silently
//     and stream dials to it fail at once with "no route to host";
//   - silent cut (Silence): as cut, but a dial hangs until its timeout, as
//     to a host that is down with its packets dropped;
//   - loss, dup, delay, reorder (SetFaults): UDP packets only; streams are
//     untouched.
//
// memberlist sometimes addresses a peer by address alone (Join, the seeds),
// so destinations are mapped to names through a registry of gossip
// addresses. A node registers itself when memberlist asks its transport for
// the advertise address (at start, once its port is known), and Register
// can be called by hand. Traffic to an address not registered passes
// untouched. Random choices come from one seeded PCG, so a run's decisions
// depend only on the seed and the order of the packets.
package faultnet

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Net is the network the wrapped transports share. Its methods are safe
// for concurrent use.
type Net struct {
	mu    sync.Mutex
	names map[string]string    // gossip address -> node name
	addrs map[string]string    // node name -> gossip address
	links map[[2]string]Faults // (from, to) -> faults
	all   Faults               // applied to every pair of registered nodes not in links
	cuts  map[[2]string]bool   // (from, to) partitioned
	quiet map[[2]string]bool   // (from, to) partitioned and dials hang
	rng   *rand.Rand
	stats Stats
}

// Faults is what happens to UDP packets on one directed link.
type Faults struct {
	Loss    float64       // fraction of packets dropped
	Dup     float64       // fraction of packets sent twice
	Delay   time.Duration // every packet sent this much later
	Reorder float64       // fraction of packets held back ReorderBy more, so later ones overtake them
}

// ReorderBy is how long a reordered packet is held back on top of Delay.
const ReorderBy = 15 * time.Millisecond

func (f Faults) zero() bool { return f == Faults{} }

// Stats counts what the Net did.
type Stats struct {
	Packets    int // packets offered between registered nodes
	Cut        int // packets dropped by a partition
	Lost       int // packets dropped by Loss
	Duplicated int
	Delayed    int
	Reordered  int
	DialsCut   int // stream dials refused by a partition
	Dials      int // stream dials between registered nodes
}

func (s Stats) String() string {
	return fmt.Sprintf("packets=%d cut=%d lost=%d duplicated=%d delayed=%d reordered=%d dials=%d dials_cut=%d",
		s.Packets, s.Cut, s.Lost, s.Duplicated, s.Delayed, s.Reordered, s.Dials, s.DialsCut)
}

// New returns a Net with no faults whose random choices follow seed.
func New(seed uint64) *Net {
	return &Net{
		names: map[string]string{},
		addrs: map[string]string{},
		links: map[[2]string]Faults{},
		cuts:  map[[2]string]bool{},
		quiet: map[[2]string]bool{},
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// Register records name's gossip address (host:port).
func (fn *Net) Register(name, addr string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if old, ok := fn.addrs[name]; ok && old != addr {
		delete(fn.names, old)
	}
	fn.names[addr] = name
	fn.addrs[name] = addr
}

// AddrOf returns the gossip address registered for name.
func (fn *Net) AddrOf(name string) string {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.addrs[name]
}

// Partition cuts a and b apart, both directions.
func (fn *Net) Partition(a, b string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.cuts[[2]string{a, b}] = true
	fn.cuts[[2]string{b, a}] = true
}

// Isolate cuts a from every other registered node: to the others it looks
// like a crashed host whose machine still refuses connections.
func (fn *Net) Isolate(a string) { fn.cutOff(a, false) }

// Silence isolates a, with dials to and from it hanging until they time
// out: a host that is gone.
func (fn *Net) Silence(a string) { fn.cutOff(a, true) }

func (fn *Net) cutOff(a string, hang bool) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for b := range fn.addrs {
		if b == a {
			continue
		}
		for _, k := range [][2]string{{a, b}, {b, a}} {
			fn.cuts[k] = true
			if hang {
				fn.quiet[k] = true
			}
		}
	}
}

// Heal removes every partition and every packet fault.
func (fn *Net) Heal() {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	clear(fn.cuts)
	clear(fn.quiet)
	clear(fn.links)
	fn.all = Faults{}
}

// SetFaults applies f to packets between a and b, both directions.
func (fn *Net) SetFaults(a, b string, f Faults) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.links[[2]string{a, b}] = f
	fn.links[[2]string{b, a}] = f
}

// SetFaultsAll applies f to packets between every pair of registered nodes
// that has no faults of its own.
func (fn *Net) SetFaultsAll(f Faults) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.all = f
}

// Stats returns the counts so far.
func (fn *Net) Stats() Stats {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.stats
}

// Wrap returns a cluster.Config.WrapTransport for the node called name.
func (fn *Net) Wrap(name string) func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	return func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		return &transport{NodeAwareTransport: inner, fn: fn, name: name, timers: map[uint64]*time.Timer{}, done: make(chan struct{})}
	}
}

// plan is the fate of one packet.
type plan struct {
	copies int           // 0: dropped
	delay  time.Duration // 0: now
}

// planPacket decides what happens to a packet from one node to an address.
func (fn *Net) planPacket(from, addr string) plan {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	to, ok := fn.names[addr]
	if !ok || to == from {
		return plan{copies: 1}
	}
	fn.stats.Packets++
	if fn.cuts[[2]string{from, to}] {
		fn.stats.Cut++
		return plan{}
	}
	f, ok := fn.links[[2]string{from, to}]
	if !ok {
		f = fn.all
	}
	if f.zero() {
		return plan{copies: 1}
	}
	// Always draw the same number of values per packet, so one fault's
	// setting does not shift the others' choices.
	rLoss, rDup, rReorder := fn.rng.Float64(), fn.rng.Float64(), fn.rng.Float64()
	if rLoss < f.Loss {
		fn.stats.Lost++
		return plan{}
	}
	p := plan{copies: 1, delay: f.Delay}
	if rDup < f.Dup {
		fn.stats.Duplicated++
		p.copies = 2
	}
	if rReorder < f.Reorder {
		fn.stats.Reordered++
		p.delay += ReorderBy
	}
	if p.delay > 0 {
		fn.stats.Delayed++
	}
	return p
}

// dialCut reports whether a stream dial from one node to an address is cut
// by a partition, and whether it hangs rather than failing at once.
func (fn *Net) dialCut(from, addr string) (cut, hang bool) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	to, ok := fn.names[addr]
	if !ok || to == from {
		return false, false
	}
	fn.stats.Dials++
	k := [2]string{from, to}
	if fn.cuts[k] {
		fn.stats.DialsCut++
		return true, fn.quiet[k]
	}
	return false, false
}
