package session

import (
	"net"
	"sync"
)

// corkConn is a client connection whose writes the session's writer can
// hold while it writes a batch of frames, and send with one write when
// the batch is done (cork, uncork): gws writes every frame with its own
// write system call, and a session with several frames queued (a reply
// after an ack, a burst of room messages, a replay) would otherwise cost
// one each. Writes made while not corked go straight through. Safe for
// concurrent use; the held bytes come from a pool, so an idle connection
// holds none.
type corkConn struct {
	net.Conn
	mu   sync.Mutex
	held *[]byte // the writes held while corked; nil: not corked
}

// corkBufs holds the buffers of corked batches between uses.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Write holds p while corked, else writes it.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.held != nil {
		*c.held = append(*c.held, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// cork holds the writes from now until uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	if c.held == nil {
		c.held = corkBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// uncork sends what was held, in one write, and lets later writes through.
// Safe to call when not corked.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	b := c.held
	c.held = nil
	c.mu.Unlock()
	if b == nil {
		return nil
	}
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	if cap(*b) <= 64<<10 { // a rare huge batch is not kept
		*b = (*b)[:0]
		corkBufs.Put(b)
	}
	return err
}

// CloseWrite sends what is held, then shuts the write side (if the
// connection has one: TCP does).
func (c *corkConn) CloseWrite() error {
	if err := c.uncork(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}

// Close sends what is held (best effort), then closes the connection.
func (c *corkConn) Close() error {
	_ = c.uncork()
	return c.Conn.Close()
}
