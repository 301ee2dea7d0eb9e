package faultnet

import (
	"bytes"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is one node's memberlist transport as the Net bends it.
type transport struct {
	memberlist.NodeAwareTransport
	fn   *Net
	name string

	mu     sync.Mutex // guards the fields below
	timers map[uint64]*time.Timer
	nextID uint64
	closed bool
	wg     sync.WaitGroup // delayed packets not yet sent or cancelled
	done   chan struct{}  // closed by Shutdown: hanging dials return
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// FinalAdvertiseAddr registers this node's gossip address: memberlist asks
// for it when it starts, once the port is known.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	aip, aport, err := t.NodeAwareTransport.FinalAdvertiseAddr(ip, port)
	if err == nil {
		t.fn.Register(t.name, net.JoinHostPort(aip.String(), strconv.Itoa(aport)))
	}
	return aip, aport, err
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
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
func (t *transport) later(d time.Duration, b []byte, a memberlist.Address) {
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

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if cut, hang := t.fn.dialCut(t.name, a.Addr); cut {
		if hang {
			t.hang(timeout)
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: addr(a.Addr), Err: os.ErrDeadlineExceeded}
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: addr(a.Addr), Err: syscall.EHOSTUNREACH}
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// hang waits for d, or until the transport shuts down.
func (t *transport) hang(d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-t.done:
	}
}

// Shutdown drops the delayed packets not yet sent, waits for those being
// sent, then shuts the real transport down.
func (t *transport) Shutdown() error {
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

// addr is a net.Addr for an address given as a string.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
