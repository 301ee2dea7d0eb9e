package muxnet

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// quiet: no keepalive ping lands amid a test's count of writes.
func quiet(c *Config) { c.KeepAliveInterval = time.Hour }

// TestStreamIsOneWrite: a stream opened, written and closed (memberlist's
// SendReliable) leaves the dialler in one write, open, data and close
// frames together; the acceptor's ACK and close leave in one write too.
// yamux alone writes the dialler's four pieces (SYN, data header, data,
// FIN) and the acceptor's two frames apart.
func TestStreamIsOneWrite(t *testing.T) {
	a, b := newTestTransport(t, quiet), newTestTransport(t, quiet)
	const size = 1000
	got := make(chan string, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // memberlist's handleConn: a bufio.Reader, the message, Close
		for {
			select {
			case c := <-b.StreamCh():
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, size)
				_, err := io.ReadFull(bufio.NewReader(c), buf)
				_ = c.Close()
				if err != nil {
					buf = []byte(err.Error())
				}
				got <- string(buf)
			case <-done:
				return
			}
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
	msg := func(i int) string { return strconv.Itoa(i) + strings.Repeat("x", size-len(strconv.Itoa(i))) }

	var s *outSession
	closed := func() bool { return s.sess.NumStreams() == 0 } // the acceptor's FIN came
	for i := range 4 {
		out, in := a.outWrites.Load(), b.inWrites.Load()
		if err := send(a, addrOf(b), msg(i)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != msg(i) {
				t.Fatalf("stream %d read %.12q..., want %.12q...", i, m, msg(i))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d not read", i)
		}
		if s == nil {
			s = a.outSessionForTest(t, addrOf(b).Addr)
		}
		testsupport.WaitFor(t, "the stream closed both ways", closed)
		if i == 0 {
			continue // the session's first stream: dialled, and its window settled
		}
		if n := a.outWrites.Load() - out; n != 1 {
			t.Errorf("stream %d: the dialler wrote %d times, want 1 (open, data and close together)", i, n)
		}
		if n := b.inWrites.Load() - in; n != 1 {
			t.Errorf("stream %d: the acceptor wrote %d times, want 1 (ACK and close together)", i, n)
		}
	}
}

// TestCorkedStreamPastWindow: a large message goes through, whole. A
// stream written past yamux's initial window while corked is sent before
// the write that would wait for a window update (which cannot come for a
// stream its peer has not seen), and the acceptor sends the credit it
// holds (its ACK carries it) before a Read waits for more.
func TestCorkedStreamPastWindow(t *testing.T) {
	a, b := newTestTransport(t, quiet), newTestTransport(t, quiet)
	recv := newSink(t, b.StreamCh())
	msg := strings.Repeat("y", 3*initialStreamWindow+17)
	c, err := a.DialAddressTimeout(addrOf(b), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for rest := msg; rest != ""; {
		n := min(len(rest), initialStreamWindow/2+1)
		if _, err := c.Write([]byte(rest[:n])); err != nil {
			t.Fatalf("write: %v", err)
		}
		rest = rest[n:]
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "the stream read", func() bool { return len(recv.messages()) == 1 })
	if got := recv.messages()[0]; got != msg {
		t.Fatalf("read %d bytes, want %d", len(got), len(msg))
	}
}

// TestCorkedStreamReadsAnswer: a corked stream that reads before it
// closes (memberlist's push/pull, a TCP ping) sends what it wrote first,
// and gets its answer.
func TestCorkedStreamReadsAnswer(t *testing.T) {
	a, b := newTestTransport(t, quiet), newTestTransport(t, quiet)
	done := make(chan struct{})
	defer close(done)
	go func() { // b's side: read the request, answer it, close
		select {
		case c := <-b.StreamCh():
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if _, err := c.Read(buf); err == nil {
				_, _ = c.Write(append([]byte("re:"), buf...))
			}
		case <-done:
		}
	}()
	c, err := a.DialAddressTimeout(addrOf(b), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := c.Read(buf); err != nil || string(buf) != "re:ping" {
		t.Fatalf("read %q, %v; want %q", buf, err, "re:ping")
	}
}

// outSessionForTest returns our session to addr.
func (t *Transport) outSessionForTest(tb testing.TB, addr string) *outSession {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.out[addr]
	if s == nil {
		tb.Fatalf("no session to %s", addr)
	}
	return s
}
