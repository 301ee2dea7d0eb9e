package muxnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/testsupport"
)

// newTestTransport starts a Transport on 127.0.0.1 with a free port and
// shuts it down when the test ends.
func newTestTransport(t *testing.T, opts ...func(*Config)) *Transport {
	t.Helper()
	cfg := Config{BindAddr: "127.0.0.1"}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}

func addrOf(tr *Transport) memberlist.Address {
	return memberlist.Address{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.Port()))}
}

// sink plays memberlist's part on the receiving side: it reads every
// stream that arrives on ch to its end, closes it, and records what it
// read.
type sink struct {
	mu  sync.Mutex
	got []string
	wg  sync.WaitGroup
}

func newSink(t *testing.T, ch <-chan net.Conn) *sink {
	s := &sink{}
	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-done:
				return
			case c := <-ch:
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				_ = c.Close()
				s.mu.Lock()
				s.got = append(s.got, string(b))
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(done); s.wg.Wait() })
	return s
}

func (s *sink) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// send opens a stream to to, writes msg and closes it, as memberlist's
// SendReliable does.
func send(tr *Transport, to memberlist.Address, msg string) error {
	c, err := tr.DialAddressTimeout(to, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

func TestStreamsShareOneConnection(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	recv := newSink(t, b.StreamCh())
	const n = 500
	for i := range n {
		if err := send(a, addrOf(b), "m"+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	testsupport.WaitFor(t, "every stream read", func() bool { return len(recv.messages()) == n })
	for i, m := range recv.messages() {
		if len(m) < 2 || m[0] != 'm' {
			t.Fatalf("stream %d read %q", i, m)
		}
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("sender %+v, receiver %+v", sa, sb)
	if sa.Dials != 1 || sa.PlainDials != 0 || sa.Streams != n || sa.Sessions != 1 {
		t.Errorf("sender: %+v, want 1 dial, %d streams, 1 session", sa, n)
	}
	if sb.Accepted != 1 || sb.PlainAccepted != 0 {
		t.Errorf("receiver: %+v, want 1 connection accepted", sb)
	}
}

func TestConcurrentFirstStreamsShareOneDial(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	recv := newSink(t, b.StreamCh())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() { errs <- send(a, addrOf(b), strconv.Itoa(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	testsupport.WaitFor(t, "every stream read", func() bool { return len(recv.messages()) == 64 })
	if d := a.Stats().Dials; d != 1 {
		t.Fatalf("%d dials for 64 concurrent first streams, want 1", d)
	}
}

// TestPlainStreamAccepted: a connection that does not start with the
// preamble is a plain memberlist stream, handed over with its first byte.
func TestPlainStreamAccepted(t *testing.T) {
	b := newTestTransport(t)
	recv := newSink(t, b.StreamCh())
	for _, msg := range []string{"\x08user message", "\x0aencrypted", "\xf4label", "W"} {
		c, err := net.Dial("tcp", addrOf(b).Addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if msg == "W" {
			continue // a preamble cut short: dropped
		}
		testsupport.WaitFor(t, "plain stream read", func() bool {
			got := recv.messages()
			return len(got) > 0 && got[len(got)-1] == msg
		})
	}
	testsupport.WaitFor(t, "4 connections accepted", func() bool { return b.Stats().Accepted == 4 })
	if s := b.Stats(); s.PlainAccepted != 3 {
		t.Fatalf("%+v, want 4 accepted, 3 plain", s)
	}
}

// TestPlainPeer: a peer on memberlist's own transport reads the preamble
// as an unknown message type and closes; streams to it then go one TCP
// connection each, without asking again until PlainRetry.
func TestPlainPeer(t *testing.T) {
	a := newTestTransport(t)
	old, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Shutdown() })
	// As memberlist's handleConn: an unknown first byte closes the stream.
	oldIn := make(chan net.Conn)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case c := <-old.StreamCh():
				var first [1]byte
				if _, err := io.ReadFull(c, first[:]); err != nil || first[0] == 'W' {
					_ = c.Close()
					continue
				}
				select {
				case oldIn <- &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(first[:]), c)}:
				case <-done:
					_ = c.Close()
					return
				}
			}
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
	recv := newSink(t, oldIn)
	to := memberlist.Address{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(old.GetAutoBindPort()))}
	for i := range 3 {
		if err := send(a, to, "\x08plain"+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	testsupport.WaitFor(t, "the old node to read 3 streams", func() bool { return len(recv.messages()) == 3 })
	if s := a.Stats(); s.Dials != 1 || s.PlainDials != 3 || s.Sessions != 0 {
		t.Fatalf("%+v: want one session dial (refused), 3 plain dials", s)
	}
}

// TestBrokenSessionRedialled: when the connection under a session breaks,
// the next streams dial a new one.
func TestBrokenSessionRedialled(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	recv := newSink(t, b.StreamCh())
	if err := send(a, addrOf(b), "before"); err != nil {
		t.Fatal(err)
	}
	if n := a.CloseConnsForTest(); n != 1 {
		t.Fatalf("closed %d connections, want 1", n)
	}
	// A stream opened before the session has seen its connection end can
	// fail; the session is dropped then, and the next one redials.
	testsupport.WaitFor(t, "a stream after the break to arrive", func() bool {
		_ = send(a, addrOf(b), "after")
		m := recv.messages()
		return len(m) > 1 && m[len(m)-1] == "after"
	})
	if s := a.Stats(); s.Dials != 2 || s.Redials != 1 {
		t.Fatalf("%+v: want 2 dials, 1 redial", s)
	}
}

func TestIdleSessionClosed(t *testing.T) {
	a := newTestTransport(t, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	b := newTestTransport(t)
	newSink(t, b.StreamCh())
	if err := send(a, addrOf(b), "x"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "the idle session to close", func() bool { return a.Stats().Sessions == 0 })
	if err := send(a, addrOf(b), "y"); err != nil {
		t.Fatal(err)
	}
	if d := a.Stats().Dials; d != 2 {
		t.Fatalf("%d dials, want 2", d)
	}
}

// TestStreamLimit: with MaxStreams open, another stream waits for one to
// close, up to its timeout.
func TestStreamLimit(t *testing.T) {
	a := newTestTransport(t, func(c *Config) { c.MaxStreams = 2 })
	b := newTestTransport(t)
	newSink(t, b.StreamCh())
	var open []net.Conn
	for range 2 {
		c, err := a.DialAddressTimeout(addrOf(b), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if _, err := a.DialAddressTimeout(addrOf(b), 50*time.Millisecond); err == nil {
		t.Fatal("a third stream opened past MaxStreams=2")
	} else if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("third stream: %v, want a timeout", err)
	}
	_ = open[0].Close()
	c, err := a.DialAddressTimeout(addrOf(b), time.Second)
	if err != nil {
		t.Fatalf("stream after one closed: %v", err)
	}
	_ = c.Close()
	_ = open[1].Close()
	if s := a.Stats(); s.Sessions != 1 || s.Dials != 1 {
		t.Fatalf("%+v: a full session is not broken, want it kept", s)
	}
}

func TestPackets(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	if _, err := a.WriteToAddress([]byte("ping"), addrOf(b)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if string(p.Buf) != "ping" || p.From.(*net.UDPAddr).Port != a.Port() {
			t.Fatalf("got %q from %s", p.Buf, p.From)
		}
	case <-time.After(testsupport.WaitLimit):
		t.Fatal("no packet")
	}
}

func TestAdvertiseAddr(t *testing.T) {
	a := newTestTransport(t)
	ip, port, err := a.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.1")) || port != a.Port() {
		t.Fatalf("bound: %s %d %v", ip, port, err)
	}
	ip, port, err = a.FinalAdvertiseAddr("10.1.2.3", 7000)
	if err != nil || ip.String() != "10.1.2.3" || port != 7000 {
		t.Fatalf("given: %s %d %v", ip, port, err)
	}
}

// TestShutdown: sessions both ways and a handshake in progress end, every
// goroutine stops, and later dials fail with ErrClosed.
func TestShutdown(t *testing.T) {
	base := runtime.NumGoroutine()
	a, err := New(Config{BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	recvA, recvB := newSink(t, a.StreamCh()), newSink(t, b.StreamCh())
	if err := send(a, addrOf(b), "a->b"); err != nil {
		t.Fatal(err)
	}
	if err := send(b, addrOf(a), "b->a"); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "both streams read", func() bool { return len(recvA.messages()) == 1 && len(recvB.messages()) == 1 })
	silent, err := net.Dial("tcp", addrOf(a).Addr) // sends nothing: a waits in the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	testsupport.WaitFor(t, "the silent connection accepted", func() bool { return a.Stats().Accepted == 2 })
	for _, tr := range []*Transport{a, b, a} {
		if err := tr.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	_ = b.Shutdown()
	if _, err := a.DialAddressTimeout(addrOf(b), time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("dial after Shutdown: %v, want ErrClosed", err)
	}
	// The sinks stop at Cleanup, after this check: count them in.
	testsupport.WaitFor(t, "the transports' goroutines to end", func() bool { return runtime.NumGoroutine() <= base+2 })
}
