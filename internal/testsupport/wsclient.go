package testsupport

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// WSClient is a real WebSocket client (gws) that records what it gets.
type WSClient struct {
	Conn   *gws.Conn
	Frames chan []byte   // messages received, in order (room for 4096)
	Pings  chan struct{} // a value per ping received while there is room (64)

	// Code and Reason are the server's close frame's; read them once
	// Closed is closed.
	Code   uint16
	Reason string

	closed   chan struct{}
	welcome  chan []byte // the welcome frame, if it came first (room for 1)
	silent   bool
	started  bool
	gotFirst bool // a frame came: only the first may be the welcome; read loop only
}

// DialOpts adjusts a dial. The zero value is a client that reads, answers
// pings, and sends its token in the URL.
type DialOpts struct {
	Header  http.Header // extra request headers
	Silent  bool        // do not answer server pings
	NoRead  bool        // do not start the read loop (a client that stops reading); see StartReading
	RcvBuf  int         // SO_RCVBUF for the client socket, if not 0
	NoToken bool        // no ?token= in the URL
	Source  string      // local IP to dial from; "": the kernel chooses
}

// DialWS opens a WebSocket to ws://addr/ws, failing the test if it cannot,
// and closes it when the test ends.
func DialWS(tb testing.TB, addr, token string, o DialOpts) *WSClient {
	tb.Helper()
	c, resp, err := TryDialWS(addr, token, o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s: %v (status %d)", addr, err, status)
	}
	tb.Cleanup(c.Close)
	return c
}

// TryDialWS opens a WebSocket to ws://addr/ws and returns the server's
// answer to the upgrade if it refused it. The caller closes the client.
func TryDialWS(addr, token string, o DialOpts) (*WSClient, *http.Response, error) {
	c := &WSClient{Frames: make(chan []byte, 4096), Pings: make(chan struct{}, 64), closed: make(chan struct{}), welcome: make(chan []byte, 1), silent: o.Silent}
	d := net.Dialer{Timeout: 5 * time.Second}
	if o.Source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.Source)}
	}
	if o.RcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.RcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	url := "ws://" + addr + "/ws"
	if !o.NoToken {
		url += "?token=" + token
	}
	conn, resp, err := gws.NewClientFromConn((*wsEvents)(c), &gws.ClientOption{Addr: url, RequestHeader: o.Header}, nc)
	if err != nil {
		return nil, resp, err
	}
	c.Conn = conn
	if !o.NoRead {
		c.StartReading()
	}
	return c, resp, nil
}

// StartReading starts the read loop of a client dialled with NoRead.
func (c *WSClient) StartReading() {
	c.started = true
	go c.Conn.ReadLoop()
}

// Close cuts the connection and waits for the read loop to end. Safe to
// call twice.
func (c *WSClient) Close() {
	_ = c.Conn.NetConn().Close()
	if c.started {
		<-c.closed
	}
}

// Closed is closed once the connection has ended.
func (c *WSClient) Closed() <-chan struct{} { return c.closed }

// IsClosed reports whether the connection has ended.
func (c *WSClient) IsClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Next waits for the next frame and decodes it. Frames that arrived before
// a close are returned before the close is reported.
func (c *WSClient) Next(tb testing.TB) map[string]any {
	tb.Helper()
	decode := func(b []byte) map[string]any {
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			tb.Fatalf("frame is not JSON: %q", b)
		}
		return f
	}
	select {
	case b := <-c.Frames:
		return decode(b)
	case <-c.closed:
		select {
		case b := <-c.Frames:
			return decode(b)
		default:
		}
		tb.Fatalf("connection closed (code %d, %q) while waiting for a frame", c.Code, c.Reason)
	case <-time.After(WaitLimit):
		tb.Fatalf("no frame within %s", WaitLimit)
	}
	return nil
}

// Welcome waits for the welcome frame and decodes it. A welcome that was
// the connection's first frame is kept apart (Next never returns it); one
// that came later is a message like any other, and Welcome does not see it.
func (c *WSClient) Welcome(tb testing.TB) map[string]any {
	tb.Helper()
	select {
	case b := <-c.welcome:
		c.welcome <- b // for the next call
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			tb.Fatalf("welcome frame is not JSON: %q", b)
		}
		return f
	case <-c.closed:
		tb.Fatalf("connection closed (code %d, %q) before a welcome frame", c.Code, c.Reason)
	case <-time.After(WaitLimit):
		tb.Fatalf("no welcome frame within %s", WaitLimit)
	}
	return nil
}

// Session returns the session id the welcome frame gave.
func (c *WSClient) Session(tb testing.TB) string {
	tb.Helper()
	id, _ := c.Welcome(tb)["session"].(string)
	if id == "" {
		tb.Fatal("welcome frame has no session id")
	}
	return id
}

// WaitClose waits for the server to close and returns its code and reason.
func (c *WSClient) WaitClose(tb testing.TB) (uint16, string) {
	tb.Helper()
	select {
	case <-c.closed:
		return c.Code, c.Reason
	case <-time.After(WaitLimit):
		tb.Fatalf("not closed within %s", WaitLimit)
	}
	return 0, ""
}

// Write sends s as a text frame.
func (c *WSClient) Write(tb testing.TB, s string) {
	tb.Helper()
	if err := c.Conn.WriteString(s); err != nil {
		tb.Fatalf("client write: %v", err)
	}
}

// DrainPings counts the pings seen since the last call (at most Pings'
// capacity, 64).
func (c *WSClient) DrainPings() int {
	n := 0
	for {
		select {
		case <-c.Pings:
			n++
		default:
			return n
		}
	}
}

// wsEvents adapts a WSClient to gws.Event.
type wsEvents WSClient

func (e *wsEvents) OnOpen(*gws.Conn) {}

func (e *wsEvents) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		e.Code, e.Reason = ce.Code, string(ce.Reason)
	}
	close(e.closed)
}

func (e *wsEvents) OnPing(conn *gws.Conn, _ []byte) {
	select {
	case e.Pings <- struct{}{}:
	default:
	}
	if !e.silent {
		_ = conn.WritePong(nil)
	}
}

func (e *wsEvents) OnPong(*gws.Conn, []byte) {}

func (e *wsEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := bytes.Clone(m.Bytes())
	m.Close()
	if !e.gotFirst {
		e.gotFirst = true
		if bytes.HasPrefix(b, []byte(`{"type":"welcome",`)) {
			e.welcome <- b
			return
		}
	}
	e.Frames <- b
}
