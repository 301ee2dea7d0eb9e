package faultnet

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

const waitLimit = 10 * time.Second

// fakeTransport records what a transport passes on, for testing the
// Net itself.
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

// TestPartitionAndPacketFaults checks the Net on its own,
// over a fake transport: registration, partition and heal, loss,
// duplication, delay and reordering.
func TestPartitionAndPacketFaults(t *testing.T) {
	fn := New(7)
	fake := &fakeTransport{sent: make(chan struct{}, 1024)}
	tr := fn.Wrap("a")(fake)
	if _, _, err := tr.FinalAdvertiseAddr("", 0); err != nil {
		t.Fatal(err)
	}
	if got := fn.AddrOf("a"); got != "127.0.0.1:1" {
		t.Fatalf("a registered as %q", got)
	}
	fn.Register("b", "127.0.0.1:2")
	const toB, toUnknown = "127.0.0.1:2", "127.0.0.1:3"
	send := func(s, addr string) {
		t.Helper()
		if _, err := tr.WriteTo([]byte(s), addr); err != nil {
			t.Fatal(err)
		}
	}

	fn.Partition("a", "b")
	send("cut", toB)
	if _, err := tr.DialAddressTimeout(memberlist.Address{Addr: toB}, time.Second); err == nil {
		t.Fatal("dial across a partition succeeded")
	} else {
		t.Logf("dial across a partition: %v", err)
	}
	send("unknown", toUnknown) // not registered: passes
	fn.Heal()
	send("healed", toB)
	conn, err := tr.DialTimeout(toB, time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	conn.Close()
	if got := fake.got(); fmt.Sprint(got) != "[unknown healed]" {
		t.Fatalf("passed %v, want [unknown healed]", got)
	}

	fn.SetFaults("a", "b", Faults{Loss: 0.1, Dup: 0.1})
	const n = 2000
	for i := range n {
		send(strconv.Itoa(i), toB)
	}
	st := fn.Stats()
	got := len(fake.got()) - 2
	t.Logf("%d packets with 10%% loss and 10%% duplication: %d passed; %v", n, got, st)
	if st.Lost < n/20 || st.Lost > n/5 || st.Duplicated < n/20 || got != n-st.Lost+st.Duplicated {
		t.Fatalf("loss/dup off: passed %d, %v", got, st)
	}

	fn.SetFaults("a", "b", Faults{Delay: 5 * time.Millisecond, Reorder: 0.5})
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
	t.Logf("delay+reorder: %v", fn.Stats())

	// Shutdown drops what is still held back, and no timer fires later.
	fn.SetFaults("a", "b", Faults{Delay: time.Hour})
	send("never", toB)
	if err := tr.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if s := fake.got(); s[len(s)-1] == "never" {
		t.Fatal("a packet held for an hour was sent")
	}
}
