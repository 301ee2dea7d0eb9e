package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// faultNet injects network faults between the nodes of an in-process test
// cluster, in the spirit of memberlist's MockTransport but over the real
// NetTransport: each node's transport is wrapped (hooks.wrap) and the
// wrappers consult one shared faultNet before they send.
//
// Faults are applied on the sending side only (every node is wrapped), per
// directed pair of node names:
//   - cut (partition): packets to the other node vanish silently and stream
//     dials to it fail at once with "no route to host";
//   - silent cut (silence): as cut, but a dial hangs until its timeout, as
//     to a host that is down with its packets dropped;
//   - loss, dup, delay, reorder: UDP packets only; streams are untouched.
//
// memberlist sometimes addresses a peer by address alone (Join, the seeds),
// so destinations are mapped to names through a registry of gossip
// addresses. A node registers itself when memberlist asks its transport
// for the advertise address (at start, once its port is known), and
// register can be called by hand. Traffic to an address not registered
// passes untouched. Random choices come from one seeded PCG, so a run's
// decisions depend only on the seed and the order of the packets.
type faultNet struct {
	mu    sync.Mutex
	names map[string]string          // gossip address -> node name
	addrs map[string]string          // node name -> gossip address
	links map[[2]string]packetFaults // (from, to) -> faults
	all   packetFaults               // applied to every pair of registered nodes not in links
	cuts  map[[2]string]bool         // (from, to) partitioned
	quiet map[[2]string]bool         // (from, to) partitioned and dials hang
	rng   *rand.Rand
	stats faultStats
}

// packetFaults is what happens to UDP packets on one directed link.
type packetFaults struct {
	Loss    float64       // fraction of packets dropped
	Dup     float64       // fraction of packets sent twice
	Delay   time.Duration // every packet sent this much later
	Reorder float64       // fraction of packets held back reorderBy more, so later ones overtake them
}

// reorderBy is how long a reordered packet is held back on top of Delay.
const reorderBy = 15 * time.Millisecond

func (f packetFaults) zero() bool { return f == packetFaults{} }

// faultStats counts what the fault net did.
type faultStats struct {
	Packets    int // packets offered between registered nodes
	Cut        int // packets dropped by a partition
	Lost       int // packets dropped by Loss
	Duplicated int
	Delayed    int
	Reordered  int
	DialsCut   int // stream dials refused by a partition
	Dials      int // stream dials between registered nodes
}

func (s faultStats) String() string {
	return fmt.Sprintf("packets=%d cut=%d lost=%d duplicated=%d delayed=%d reordered=%d dials=%d dials_cut=%d",
		s.Packets, s.Cut, s.Lost, s.Duplicated, s.Delayed, s.Reordered, s.Dials, s.DialsCut)
}

func newFaultNet(seed uint64) *faultNet {
	return &faultNet{
		names: map[string]string{},
		addrs: map[string]string{},
		links: map[[2]string]packetFaults{},
		cuts:  map[[2]string]bool{},
		quiet: map[[2]string]bool{},
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// register records name's gossip address (host:port).
func (fn *faultNet) register(name, addr string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if old, ok := fn.addrs[name]; ok && old != addr {
		delete(fn.names, old)
	}
	fn.names[addr] = name
	fn.addrs[name] = addr
}

// addrOf returns the gossip address registered for name.
func (fn *faultNet) addrOf(name string) string {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.addrs[name]
}

// partition cuts a and b apart, both directions.
func (fn *faultNet) partition(a, b string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.cuts[[2]string{a, b}] = true
	fn.cuts[[2]string{b, a}] = true
}

// isolate cuts a from every other registered node: to the others it looks
// like a crashed host.
func (fn *faultNet) isolate(a string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for b := range fn.addrs {
		if b != a {
			fn.cuts[[2]string{a, b}] = true
			fn.cuts[[2]string{b, a}] = true
		}
	}
}

// silence isolates a, with dials to and from it hanging until they time out.
func (fn *faultNet) silence(a string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for b := range fn.addrs {
		if b != a {
			for _, k := range [][2]string{{a, b}, {b, a}} {
				fn.cuts[k] = true
				fn.quiet[k] = true
			}
		}
	}
}

// heal removes every partition and every packet fault.
func (fn *faultNet) heal() {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	clear(fn.cuts)
	clear(fn.quiet)
	clear(fn.links)
	fn.all = packetFaults{}
}

// setFaults applies f to packets between a and b, both directions.
func (fn *faultNet) setFaults(a, b string, f packetFaults) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.links[[2]string{a, b}] = f
	fn.links[[2]string{b, a}] = f
}

// setFaultsAll applies f to packets between every pair of registered
// nodes that has no faults of its own.
func (fn *faultNet) setFaultsAll(f packetFaults) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	fn.all = f
}

func (fn *faultNet) snapshot() faultStats {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	return fn.stats
}

// option is a newTestCluster option that wraps node i's transport
// (nodes are named t1..tn there).
func (fn *faultNet) option(i int, h *testConfigHooks) {
	h.wrap = fn.wrap(fmt.Sprintf("t%d", i+1))
}

// wrap returns a hooks.wrap for the node called name.
func (fn *faultNet) wrap(name string) func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	return func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		return &faultTransport{NodeAwareTransport: inner, fn: fn, name: name, timers: map[uint64]*time.Timer{}, done: make(chan struct{})}
	}
}

// packetPlan is the fate of one packet.
type packetPlan struct {
	copies int           // 0: dropped
	delay  time.Duration // 0: now
}

// planPacket decides what happens to a packet from one node to an address.
func (fn *faultNet) planPacket(from, addr string) packetPlan {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	to, ok := fn.names[addr]
	if !ok || to == from {
		return packetPlan{copies: 1}
	}
	fn.stats.Packets++
	if fn.cuts[[2]string{from, to}] {
		fn.stats.Cut++
		return packetPlan{}
	}
	f, ok := fn.links[[2]string{from, to}]
	if !ok {
		f = fn.all
	}
	if f.zero() {
		return packetPlan{copies: 1}
	}
	// Always draw the same number of values per packet, so one fault's
	// setting does not shift the others' choices.
	rLoss, rDup, rReorder := fn.rng.Float64(), fn.rng.Float64(), fn.rng.Float64()
	if rLoss < f.Loss {
		fn.stats.Lost++
		return packetPlan{}
	}
	p := packetPlan{copies: 1, delay: f.Delay}
	if rDup < f.Dup {
		fn.stats.Duplicated++
		p.copies = 2
	}
	if rReorder < f.Reorder {
		fn.stats.Reordered++
		p.delay += reorderBy
	}
	if p.delay > 0 {
		fn.stats.Delayed++
	}
	return p
}

// dialCut reports whether a stream dial from one node to an address is
// cut by a partition, and whether it hangs rather than failing at once.
func (fn *faultNet) dialCut(from, addr string) (cut, hang bool) {
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

// faultTransport is one node's transport as the fault net bends it.
type faultTransport struct {
	memberlist.NodeAwareTransport
	fn   *faultNet
	name string

	mu     sync.Mutex // guards the fields below
	timers map[uint64]*time.Timer
	nextID uint64
	closed bool
	wg     sync.WaitGroup // delayed packets not yet sent or cancelled
	done   chan struct{}  // closed by Shutdown: hanging dials return
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

// FinalAdvertiseAddr registers this node's gossip address: memberlist
// asks for it when it starts, once the port is known.
func (t *faultTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	aip, aport, err := t.NodeAwareTransport.FinalAdvertiseAddr(ip, port)
	if err == nil {
		t.fn.register(t.name, net.JoinHostPort(aip.String(), strconv.Itoa(aport)))
	}
	return aip, aport, err
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	p := t.fn.planPacket(t.name, a.Addr)
	if p.copies == 0 {
		return time.Now(), nil // lost: UDP does not say so
	}
	if p.delay == 0 {
		ts, err := t.NodeAwareTransport.WriteToAddress(b, a)
		if err == nil && p.copies > 1 {
			_, err = t.NodeAwareTransport.WriteToAddress(b, a)
		}
		return ts, err
	}
	for range p.copies {
		t.later(p.delay, bytes.Clone(b), a)
	}
	return time.Now(), nil
}

// later sends b to a after d, unless the transport shuts down first.
func (t *faultTransport) later(d time.Duration, b []byte, a memberlist.Address) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	id := t.nextID
	t.nextID++
	t.wg.Add(1)
	t.timers[id] = time.AfterFunc(d, func() {
		defer t.wg.Done()
		t.mu.Lock()
		delete(t.timers, id)
		closed := t.closed
		t.mu.Unlock()
		if !closed {
			_, _ = t.NodeAwareTransport.WriteToAddress(b, a)
		}
	})
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if cut, hang := t.fn.dialCut(t.name, a.Addr); cut {
		if hang {
			t.hang(timeout)
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: addrString(a.Addr), Err: os.ErrDeadlineExceeded}
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: addrString(a.Addr), Err: syscall.EHOSTUNREACH}
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// hang waits for d, or until the transport shuts down.
func (t *faultTransport) hang(d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-t.done:
	}
}

// Shutdown drops the delayed packets not yet sent, waits for those being
// sent, then shuts the real transport down.
func (t *faultTransport) Shutdown() error {
	t.mu.Lock()
	if !t.closed {
		close(t.done)
	}
	t.closed = true
	for id, tm := range t.timers {
		if tm.Stop() {
			t.wg.Done()
		}
		delete(t.timers, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
	return t.NodeAwareTransport.Shutdown()
}

// fakeTransport records what a faultTransport passes on, for testing the
// fault net itself.
type fakeTransport struct {
	mu      sync.Mutex
	packets []string // payloads, in the order written
	sent    chan struct{}
	dials   int
}

func (f *fakeTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IPv4(127, 0, 0, 1), 1, nil
}
func (f *fakeTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}
func (f *fakeTransport) WriteToAddress(b []byte, _ memberlist.Address) (time.Time, error) {
	f.mu.Lock()
	f.packets = append(f.packets, string(b))
	f.mu.Unlock()
	select {
	case f.sent <- struct{}{}:
	default:
	}
	return time.Now(), nil
}
func (f *fakeTransport) PacketCh() <-chan *memberlist.Packet { return nil }
func (f *fakeTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return f.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}
func (f *fakeTransport) DialAddressTimeout(memberlist.Address, time.Duration) (net.Conn, error) {
	f.mu.Lock()
	f.dials++
	f.mu.Unlock()
	a, b := net.Pipe()
	b.Close()
	return a, nil
}
func (f *fakeTransport) StreamCh() <-chan net.Conn { return nil }
func (f *fakeTransport) Shutdown() error           { return nil }

func (f *fakeTransport) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.packets...)
}

// TestFaultNetPartitionAndPacketFaults checks the fault net on its own,
// over a fake transport: registration, partition and heal, loss,
// duplication, delay and reordering.
func TestFaultNetPartitionAndPacketFaults(t *testing.T) {
	fn := newFaultNet(7)
	fake := &fakeTransport{sent: make(chan struct{}, 1024)}
	tr := fn.wrap("a")(fake)
	if _, _, err := tr.FinalAdvertiseAddr("", 0); err != nil {
		t.Fatal(err)
	}
	if got := fn.addrOf("a"); got != "127.0.0.1:1" {
		t.Fatalf("a registered as %q", got)
	}
	fn.register("b", "127.0.0.1:2")
	const toB, toUnknown = "127.0.0.1:2", "127.0.0.1:3"
	send := func(s, addr string) {
		t.Helper()
		if _, err := tr.WriteTo([]byte(s), addr); err != nil {
			t.Fatal(err)
		}
	}

	fn.partition("a", "b")
	send("cut", toB)
	if _, err := tr.DialAddressTimeout(memberlist.Address{Addr: toB}, time.Second); err == nil {
		t.Fatal("dial across a partition succeeded")
	} else {
		t.Logf("dial across a partition: %v", err)
	}
	send("unknown", toUnknown) // not registered: passes
	fn.heal()
	send("healed", toB)
	conn, err := tr.DialTimeout(toB, time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	conn.Close()
	if got := fake.got(); fmt.Sprint(got) != "[unknown healed]" {
		t.Fatalf("passed %v, want [unknown healed]", got)
	}

	fn.setFaults("a", "b", packetFaults{Loss: 0.1, Dup: 0.1})
	const n = 2000
	for i := range n {
		send(strconv.Itoa(i), toB)
	}
	st := fn.snapshot()
	got := len(fake.got()) - 2
	t.Logf("%d packets with 10%% loss and 10%% duplication: %d passed; %v", n, got, st)
	if st.Lost < n/20 || st.Lost > n/5 || st.Duplicated < n/20 || got != n-st.Lost+st.Duplicated {
		t.Fatalf("loss/dup off: passed %d, %v", got, st)
	}

	fn.setFaults("a", "b", packetFaults{Delay: 5 * time.Millisecond, Reorder: 0.5})
	before := len(fake.got())
	const m = 40
	start := time.Now()
	for i := range m {
		send("r"+strconv.Itoa(i), toB)
	}
	deadline := time.After(waitLimit)
	for len(fake.got()) < before+m {
		select {
		case <-fake.sent:
		case <-deadline:
			t.Fatalf("delayed packets: %d of %d arrived", len(fake.got())-before, m)
		}
	}
	if el := time.Since(start); el < 5*time.Millisecond {
		t.Fatalf("delayed packets arrived after %s", el)
	}
	late := fake.got()[before:]
	inOrder := true
	for i, s := range late {
		inOrder = inOrder && s == "r"+strconv.Itoa(i)
	}
	if inOrder {
		t.Fatalf("half the packets held back, yet all %d arrived in order", m)
	}
	t.Logf("delay+reorder: %v", fn.snapshot())

	// Shutdown drops what is still held back, and no timer fires later.
	fn.setFaults("a", "b", packetFaults{Delay: time.Hour})
	send("never", toB)
	if err := tr.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if s := fake.got(); s[len(s)-1] == "never" {
		t.Fatal("a packet held for an hour was sent")
	}
}
