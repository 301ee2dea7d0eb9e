package muxnet

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// yamux v0.1.2's frame header, as its send loop writes it: version,
// type, flags, stream id, length; 12 bytes, big-endian.
const (
	hdrSize          = 12
	yamuxVersion     = 0
	typeData         = 0
	typeWindowUpdate = 1
	flagSYN          = 0x1
	flagFIN          = 0x4
	flagRST          = 0x8

	// initialStreamWindow is yamux's: what a new stream may send before
	// its peer grants more. A corked stream (frameConn.cork) writes at
	// most this much: past it, yamux waits for a window update that
	// cannot come before the frames held are sent.
	initialStreamWindow = 256 * 1024

	// maxPendCap: a buffer of held frames grown past this (a corked
	// stream of up to initialStreamWindow) is not kept for the next.
	maxPendCap = 64 * 1024
)

// frameConn is the TCP connection under a yamux session as yamux sees
// it. yamux's send loop writes each frame with one call, and a data
// frame's header and body with two; frameConn sends them in fewer
// system calls, in the same order:
//
//   - A data frame's header waits for its body, which the send loop
//     writes next: one write for both.
//   - While a stream is corked (cork, then uncork: an outgoing stream from
//     its open to its Close, the first Read or a write past
//     initialStreamWindow), every frame the session writes is held,
//     copied; uncork sends all of them with one write. A memberlist
//     message (open, data, close) is then one write, not four, and the
//     peer reads it with one read.
//   - On an accepted session (holdUpdates), a bare window update (the
//     ACK yamux sends when it accepts a stream, or the credit a Read
//     gives back) waits for the next frame or for the stream's next Read
//     (inStream), whichever comes first: in memberlist's use the stream's
//     reply or close, so that ACK and FIN go in one write. A Read sends
//     it first because the dialler may be waiting for that credit to send
//     what the Read wants. memberlist closes every stream it accepts
//     within its TCPTimeout (cluster: CallTimeout, 750 ms), so nothing
//     waits longer; the dialler's StreamOpenTimeout (10 s), which an ACK
//     held too long would trip, stays far above it.
//
// A write that fails closes the connection: the session ends, as when
// yamux's own write fails. Frames held when it fails are lost with it.
// Write is called by yamux's send loop only; cork and uncork by any
// goroutine.
type frameConn struct {
	net.Conn
	holdUpdates bool           // accepted session: hold bare window updates for the next frame or Read
	writes      *atomic.Uint64 // counts the system calls that write frames (tests)

	mu    sync.Mutex // guards the fields below; a leaf lock, held across a write to the connection
	corks int        // streams corked now
	pend  []byte     // frames written by yamux, not yet sent
	err   error      // the first write error; every later write fails with it
}

func newFrameConn(c net.Conn, holdUpdates bool, writes *atomic.Uint64) *frameConn {
	return &frameConn{Conn: c, holdUpdates: holdUpdates, writes: writes}
}

// Write takes one frame's header, or a data frame's body, from yamux's
// send loop: it sends it with whatever is held, or holds it (see
// frameConn).
func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks > 0 || c.holdable(p) {
		c.pend = append(c.pend, p...)
		return len(p), nil
	}
	if len(c.pend) == 0 {
		return c.sendLocked(net.Buffers{p}, len(p))
	}
	return c.sendLocked(net.Buffers{c.pend, p}, len(p))
}

// holdable: p is a frame header whose sending can wait for the next
// write: a data frame's (its body comes next), or, on an accepted
// session, a window update that opens, closes or resets nothing.
func (c *frameConn) holdable(p []byte) bool {
	if len(p) != hdrSize || p[0] != yamuxVersion {
		return false
	}
	switch p[1] {
	case typeData:
		return binary.BigEndian.Uint32(p[8:12]) > 0
	case typeWindowUpdate:
		return c.holdUpdates && binary.BigEndian.Uint16(p[2:4])&(flagSYN|flagFIN|flagRST) == 0
	}
	return false
}

// sendLocked writes bufs (held frames, then the last write's n bytes) in
// one system call, empties pend, and reports the last write's part;
// c.mu must be held.
func (c *frameConn) sendLocked(bufs net.Buffers, n int) (int, error) {
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	c.writes.Add(1)
	written, err := bufs.WriteTo(c.Conn)
	c.pend = c.pend[:0]
	if cap(c.pend) > maxPendCap {
		c.pend = nil
	}
	if err != nil {
		c.err = err
		_ = c.Conn.Close()
		return max(0, n-int(total-written)), err
	}
	return n, nil
}

// flush sends the frames held, if any, now.
func (c *frameConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || len(c.pend) == 0 {
		return c.err
	}
	_, err := c.sendLocked(net.Buffers{c.pend}, 0)
	return err
}

// cork holds every frame until uncork. Each cork is undone by exactly
// one uncork, soon: the frames of every stream on the session wait.
func (c *frameConn) cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// uncork undoes a cork and sends every frame held, with one write, even
// if another stream is corked still: no frame waits longer than the
// cork it was written under.
func (c *frameConn) uncork() error {
	c.mu.Lock()
	c.corks--
	c.mu.Unlock()
	return c.flush()
}
