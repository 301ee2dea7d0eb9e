// Package muxnet is a memberlist transport (memberlist.NodeAwareTransport)
// that carries memberlist's reliable streams over one persistent TCP
// connection per peer, multiplexed with hashicorp/yamux, instead of one TCP
// connection per stream as memberlist's NetTransport does. memberlist's
// SendReliable, push/pull and TCP fallback probes each open a yamux stream
// and close it; no TCP handshake, no TIME_WAIT socket per message. UDP
// gossip is plain UDP on the same port, as with NetTransport.
//
// The transport only moves bytes: memberlist encrypts stream payloads with
// its keyring and writes its label header above it, as it does over
// NetTransport.
//
// # Wire
//
// A connection that starts with the preamble "WSMX" + version (1) is a
// multiplexed session: the accepting side answers with the same five bytes
// and runs a yamux server on it; each stream it accepts is one memberlist
// stream. Any other first byte is a plain memberlist stream (memberlist's
// first byte is a message type below 20, the encryption version, or its
// label marker 244; 'W' is 87), handed to memberlist with that byte put
// back. So a node on this transport accepts nodes still on memberlist's own
// transport, and answers them as before.
//
// Dialling, a node sends the preamble and waits for the answer. A peer
// that answers anything else, or closes (memberlist's NetTransport reads
// 'W' as an unknown message type and drops the connection), is on plain
// memberlist: streams to it are plain TCP connections, one per stream,
// and it is asked again after PlainRetry, so that once it is upgraded the
// pair moves to a session by itself.
//
// # Sessions and limits
//
// Outgoing: one yamux client session per peer address, dialled by the
// first stream to it (concurrent first streams share that one dial) and
// reused. A session found closed (the peer went away, a keepalive went
// unanswered, the connection broke) is dropped and redialled by the next
// stream; an OpenStream that fails drops the session and redials once
// within the same timeout. A session with no stream for IdleTimeout is
// closed. Incoming: the peer's session, for as long as it keeps it.
// Both directions of a pair have their own connection (each side dials
// its own), so a pair of nodes holds two TCP connections.
//
// yamux's limits, set deliberately (Config's defaults):
//   - Keepalive every 10 s, with ConnectionWriteTimeout 5 s: a peer that
//     vanished without a FIN or RST (host down, cable cut) is found within
//     15 s and its session redialled, rather than after the kernel's
//     retransmission timeout (~15 min). Both ends ping.
//   - ConnectionWriteTimeout 5 s also bounds a frame waiting for a wedged
//     connection; then the session closes. memberlist's own stream
//     deadline (cluster's TCPTimeout, 750 ms) bounds each stream as before.
//   - MaxStreams 256 open streams per outgoing session, AcceptBacklog 256
//     on both ends: a link sends one batch at a time, and gossip adds a
//     push/pull or a probe now and then, so a handful are open in normal
//     use; 256 leaves room for bursts (memberlist callers beside the
//     relay) while never opening more streams than the peer's accept
//     backlog (yamux resets streams beyond it). A stream over the limit
//     waits for one to close, up to memberlist's dial timeout.
//   - MaxStreamWindowSize 1 MiB, the link's batch cap (cluster's
//     maxBatchBytes): a full batch flows with one window update rather
//     than four. memberlist reads every stream as soon as it arrives, so
//     a receive buffer holds only what is in flight.
//   - StreamOpenTimeout 10 s: a peer that does not acknowledge a new
//     stream within 10 s has a wedged session; it is closed and redialled.
//     (A peer holds a stream's ACK until its reply or close, at most
//     memberlist's TCPTimeout: see Writes.)
//   - StreamCloseTimeout 30 s: a stream we closed whose peer never closes
//     its end is freed after 30 s (memberlist closes its end within its
//     750 ms stream deadline).
//   - IdleTimeout 5 min: a session unused that long is closed, so a
//     cluster that stopped talking to a node holds no connection for it.
//
// # Writes
//
// yamux writes each frame with a system call of its own, a data frame
// with two. A memberlist message (stream open, data, close) is sent with
// one: a stream we open holds the session's frames (corked) until its
// Close, its first Read, or a write past yamux's initial window, then
// sends them all at once; the peer answers ACK and close with one write
// too. See frameConn (frameconn.go) for the rules and their bounds.
//
// Lifecycle: New binds TCP and UDP and starts the listeners; Shutdown
// (memberlist calls it) closes the listeners and every session and
// connection, and waits for every goroutine. Every goroutine is owned by
// the Transport and stopped by Shutdown.
package muxnet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/yamux"
)

// preamble starts every multiplexed connection, both ways: magic and
// version. Its first byte cannot start a plain memberlist stream.
var preamble = [5]byte{'W', 'S', 'M', 'X', 1}

// ErrClosed is returned by a Transport that was shut down.
var ErrClosed = errors.New("muxnet: transport shut down")

const (
	udpPacketBufSize = 65536           // as memberlist's NetTransport
	udpRecvBufSize   = 2 * 1024 * 1024 // tried first, halved until the kernel takes it
)

// Config configures a Transport. Zero values take the defaults named.
type Config struct {
	BindAddr string      // IP to listen on (TCP and UDP); required ("0.0.0.0": all)
	BindPort int         // port for both; 0 picks a free one (see Port)
	Logger   *log.Logger // memberlist-style "[ERR] ..." lines; default: discarded

	KeepAliveInterval      time.Duration // default 10s
	ConnectionWriteTimeout time.Duration // default 5s
	MaxStreams             int           // default 256 open streams per outgoing session (and the accept backlog)
	MaxStreamWindowSize    uint32        // default 1 MiB
	StreamOpenTimeout      time.Duration // default 10s
	StreamCloseTimeout     time.Duration // default 30s
	IdleTimeout            time.Duration // default 5m
	PlainRetry             time.Duration // default 30s: ask a plain peer for a session again after this
	HandshakeTimeout       time.Duration // default 5s: an accepted connection must send its first bytes by then
}

func (c *Config) fill() {
	if c.Logger == nil {
		c.Logger = log.New(io.Discard, "", 0)
	}
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = 10 * time.Second
	}
	if c.ConnectionWriteTimeout <= 0 {
		c.ConnectionWriteTimeout = 5 * time.Second
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 256
	}
	if c.MaxStreamWindowSize == 0 {
		c.MaxStreamWindowSize = 1 << 20
	}
	if c.StreamOpenTimeout <= 0 {
		c.StreamOpenTimeout = 10 * time.Second
	}
	if c.StreamCloseTimeout <= 0 {
		c.StreamCloseTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.PlainRetry <= 0 {
		c.PlainRetry = 30 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
}

// Stats are running totals since New, and what is open now.
type Stats struct {
	Dials         uint64 // TCP connections dialled for sessions (including failed ones and plain peers' probes)
	PlainDials    uint64 // TCP connections dialled for one plain stream each (peers on memberlist's own transport)
	Accepted      uint64 // TCP connections accepted
	PlainAccepted uint64 // of which plain memberlist streams
	Streams       uint64 // streams opened on outgoing sessions
	Redials       uint64 // sessions dropped because they had closed or failed (each is redialled by the next stream)
	Sessions      int    // outgoing sessions open now
}

// Transport is a memberlist.NodeAwareTransport; see the package doc.
// Its methods are safe for concurrent use.
type Transport struct {
	cfg      Config
	ymx      *yamux.Config
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{} // closed by Shutdown
	wg       sync.WaitGroup

	mu      sync.Mutex // guards the fields below; a leaf lock
	closed  bool
	out     map[string]*outSession // peer address -> our session to it
	dialing map[string]*dialCall   // peer address -> the session dial in progress
	plain   map[string]time.Time   // peer address -> until when to dial it plain
	in      map[net.Conn]bool      // accepted connections, until they end

	dials, plainDials, accepted, plainAccepted, streams, redials atomic.Uint64
	outWrites, inWrites                                          atomic.Uint64 // system calls writing frames, on our sessions and on accepted ones
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// outSession is our yamux client session to one peer.
type outSession struct {
	addr     string
	conn     net.Conn   // the TCP connection under it
	fc       *frameConn // conn as yamux writes it
	sess     *yamux.Session
	sem      chan struct{} // one token per open stream
	lastUsed atomic.Int64  // unix nanoseconds of the last stream opened or closed
}

// dialCall is a session dial in progress; done is closed when it ends.
type dialCall struct {
	done  chan struct{}
	s     *outSession
	plain bool
	err   error
}

// New binds cfg.BindAddr:cfg.BindPort for TCP and UDP (the same port; with
// port 0, the one TCP got) and starts listening.
func New(cfg Config) (*Transport, error) {
	cfg.fill()
	ip := net.ParseIP(cfg.BindAddr)
	if ip == nil {
		return nil, fmt.Errorf("muxnet: bind address %q is not an IP", cfg.BindAddr)
	}
	ymx := yamux.DefaultConfig()
	ymx.AcceptBacklog = cfg.MaxStreams
	ymx.EnableKeepAlive = true
	ymx.KeepAliveInterval = cfg.KeepAliveInterval
	ymx.ConnectionWriteTimeout = cfg.ConnectionWriteTimeout
	ymx.MaxStreamWindowSize = cfg.MaxStreamWindowSize
	ymx.StreamOpenTimeout = cfg.StreamOpenTimeout
	ymx.StreamCloseTimeout = cfg.StreamCloseTimeout
	ymx.LogOutput = nil
	ymx.Logger = cfg.Logger
	if err := yamux.VerifyConfig(ymx); err != nil {
		return nil, fmt.Errorf("muxnet: %w", err)
	}

	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: cfg.BindPort})
	if err != nil {
		return nil, fmt.Errorf("muxnet: listen tcp %s port %d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("muxnet: listen udp %s port %d: %w", cfg.BindAddr, port, err)
	}
	if err := setUDPRecvBuf(udp); err != nil {
		_ = tcp.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("muxnet: resize udp buffer: %w", err)
	}
	t := &Transport{
		cfg:      cfg,
		ymx:      ymx,
		tcp:      tcp,
		udp:      udp,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
		out:      map[string]*outSession{},
		dialing:  map[string]*dialCall{},
		plain:    map[string]time.Time{},
		in:       map[net.Conn]bool{},
	}
	t.wg.Add(3)
	go t.tcpListen()
	go t.udpListen()
	go t.reapIdle()
	return t, nil
}

// Port returns the port bound (the one picked when BindPort was 0).
func (t *Transport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// Stats returns the running totals.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	n := len(t.out)
	t.mu.Unlock()
	return Stats{
		Dials:         t.dials.Load(),
		PlainDials:    t.plainDials.Load(),
		Accepted:      t.accepted.Load(),
		PlainAccepted: t.plainAccepted.Load(),
		Streams:       t.streams.Load(),
		Redials:       t.redials.Load(),
		Sessions:      n,
	}
}

// FinalAdvertiseAddr is memberlist's NetTransport's: the address given,
// else a private IP when bound to 0.0.0.0, else the bound IP; the port
// given with an address, else the bound port.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("failed to parse advertise address %q", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if t.cfg.BindAddr == "0.0.0.0" {
		priv, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("failed to get interface addresses: %v", err)
		}
		if priv == "" {
			return nil, 0, errors.New("no private IP address found, and explicit IP not provided")
		}
		a := net.ParseIP(priv)
		if a == nil {
			return nil, 0, fmt.Errorf("failed to parse advertise address: %q", priv)
		}
		return a, t.Port(), nil
	}
	return t.tcp.Addr().(*net.TCPAddr).IP, t.Port(), nil
}

// WriteTo sends a UDP packet.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a UDP packet from the bound port.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

// PacketCh carries incoming UDP packets.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh carries incoming streams: yamux streams of peers' sessions and
// plain TCP connections alike. memberlist closes each.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout opens a stream to addr.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to a.Addr within timeout: on our
// session to it (dialling one if there is none, or if it broke), or a TCP
// connection of its own when the peer speaks only plain memberlist. The
// caller closes the stream, soon, as memberlist does: until its Close or
// first Read the stream holds every frame of its session (stream).
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		s, plain, err := t.session(a.Addr, deadline)
		if err != nil {
			return nil, err
		}
		if plain {
			return t.dialPlain(a.Addr, deadline)
		}
		c, broken, err := t.open(s, deadline)
		if err == nil {
			return c, nil
		}
		if broken {
			t.drop(s)
		}
		if !broken || attempt > 0 || !time.Now().Before(deadline) {
			return nil, fmt.Errorf("muxnet: open stream to %s: %w", a.Addr, err)
		}
	}
}

// session returns our open session to addr, dialling it if needed, or
// plain=true if addr speaks only plain memberlist.
func (t *Transport) session(addr string, deadline time.Time) (s *outSession, plain bool, err error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, false, ErrClosed
		}
		if until, ok := t.plain[addr]; ok {
			if time.Now().Before(until) {
				t.mu.Unlock()
				return nil, true, nil
			}
			delete(t.plain, addr)
		}
		if s := t.out[addr]; s != nil {
			if !s.sess.IsClosed() {
				t.mu.Unlock()
				return s, false, nil
			}
			t.forgetLocked(s) // closed already: nothing to close
		}
		if d := t.dialing[addr]; d != nil {
			t.mu.Unlock()
			if err := t.wait(d.done, deadline); err != nil {
				return nil, false, fmt.Errorf("muxnet: dial %s: %w", addr, err)
			}
			if d.err != nil {
				return nil, false, d.err
			}
			continue // look again: the session may have broken already
		}
		d := &dialCall{done: make(chan struct{})}
		t.dialing[addr] = d
		t.mu.Unlock()

		d.s, d.plain, d.err = t.dialSession(addr, deadline)
		t.mu.Lock()
		delete(t.dialing, addr)
		switch {
		case d.err != nil:
		case t.closed:
			if d.s != nil {
				_ = d.s.sess.Close()
			}
			d.s, d.plain, d.err = nil, false, ErrClosed
		case d.plain:
			t.plain[addr] = time.Now().Add(t.cfg.PlainRetry)
		default:
			t.out[addr] = d.s
		}
		close(d.done)
		t.mu.Unlock()
		if d.plain {
			t.cfg.Logger.Printf("[DEBUG] muxnet: %s speaks plain memberlist: one connection per stream, asking again in %s", addr, t.cfg.PlainRetry)
		}
		return d.s, d.plain, d.err
	}
}

// wait waits for ch to close, until deadline or Shutdown.
func (t *Transport) wait(ch <-chan struct{}, deadline time.Time) error {
	tm := time.NewTimer(time.Until(deadline))
	defer tm.Stop()
	select {
	case <-ch:
		return nil
	case <-tm.C:
		return errTimeout
	case <-t.done:
		return ErrClosed
	}
}

// errTimeout is a net.Error that says it timed out, as a dial's would.
var errTimeout error = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

// dialSession dials addr, sends the preamble and reads the answer by
// deadline. plain=true: the peer answered something else or closed, so it
// is on plain memberlist.
func (t *Transport) dialSession(addr string, deadline time.Time) (*outSession, bool, error) {
	t.dials.Add(1)
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	_ = conn.SetDeadline(deadline)
	var answer [len(preamble)]byte
	if _, err = conn.Write(preamble[:]); err == nil {
		_, err = io.ReadFull(conn, answer[:])
	}
	if err != nil || answer != preamble {
		_ = conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, false, fmt.Errorf("muxnet: handshake with %s: %w", addr, err)
		}
		return nil, true, nil
	}
	_ = conn.SetDeadline(time.Time{})
	fc := newFrameConn(conn, false, &t.outWrites)
	sess, err := yamux.Client(fc, t.ymx)
	if err != nil {
		_ = conn.Close()
		return nil, false, fmt.Errorf("muxnet: session to %s: %w", addr, err)
	}
	s := &outSession{addr: addr, conn: conn, fc: fc, sess: sess, sem: make(chan struct{}, t.cfg.MaxStreams)}
	s.lastUsed.Store(time.Now().UnixNano())
	return s, false, nil
}

// dialPlain dials addr for one plain memberlist stream.
func (t *Transport) dialPlain(addr string, deadline time.Time) (net.Conn, error) {
	t.plainDials.Add(1)
	d := net.Dialer{Deadline: deadline}
	return d.Dial("tcp", addr)
}

// open opens a stream on s, waiting for a free one of its MaxStreams until
// deadline. broken: s failed, and should be dropped.
func (t *Transport) open(s *outSession, deadline time.Time) (c net.Conn, broken bool, err error) {
	select {
	case s.sem <- struct{}{}:
	default:
		tm := time.NewTimer(time.Until(deadline))
		select {
		case s.sem <- struct{}{}:
			tm.Stop()
		case <-tm.C:
			return nil, false, fmt.Errorf("%d streams open: %w", cap(s.sem), errTimeout)
		case <-t.done:
			tm.Stop()
			return nil, false, ErrClosed
		case <-s.sess.CloseChan():
			tm.Stop()
			return nil, true, yamux.ErrSessionShutdown
		}
	}
	s.fc.cork()
	st, err := s.sess.OpenStream()
	if err != nil {
		_ = s.fc.uncork()
		<-s.sem
		return nil, true, err
	}
	t.streams.Add(1)
	s.lastUsed.Store(time.Now().UnixNano())
	out := &stream{Stream: st, s: s}
	out.corked.Store(true)
	return out, false, nil
}

// stream is a yamux stream that gives its session's token back on Close.
// It is opened corked (frameConn): its open and what is written to it are
// sent with its close, in one write, unless it is read first (a request
// that waits for an answer) or written past initialStreamWindow.
type stream struct {
	*yamux.Stream
	s       *outSession
	corked  atomic.Bool // the session's frames are held for this stream
	written int         // bytes written while corked; only Write touches it
	once    sync.Once
}

// unblock uncorks the stream, if it is corked: what is held is sent.
func (c *stream) unblock() error {
	if c.corked.CompareAndSwap(true, false) {
		return c.s.fc.uncork()
	}
	return nil
}

// Write writes b to the stream; while corked, and within yamux's initial
// window, the frames wait for Close or Read.
func (c *stream) Write(b []byte) (int, error) {
	if c.corked.Load() {
		if c.written+len(b) > initialStreamWindow {
			if err := c.unblock(); err != nil {
				return 0, err
			}
		}
		c.written += len(b)
	}
	return c.Stream.Write(b)
}

// Read sends what a corked stream holds, then reads the answer.
func (c *stream) Read(b []byte) (int, error) {
	if err := c.unblock(); err != nil {
		return 0, err
	}
	return c.Stream.Read(b)
}

// Close closes our end of the stream (the peer closes its own) and sends
// what it held, with its close; safe to call twice. An error sending it
// ends the session as a failed write does, and is returned.
func (c *stream) Close() error {
	err := c.Stream.Close()
	if uerr := c.unblock(); uerr != nil && err == nil {
		err = uerr
	}
	c.once.Do(func() {
		<-c.s.sem
		c.s.lastUsed.Store(time.Now().UnixNano())
	})
	return err
}

// drop forgets s, if it is still our session to its peer, and closes it.
func (t *Transport) drop(s *outSession) {
	t.mu.Lock()
	t.forgetLocked(s)
	t.mu.Unlock()
	_ = s.sess.Close()
}

// forgetLocked forgets s, if it is still our session to its peer, so that
// the next stream to it dials a new one; t.mu held.
func (t *Transport) forgetLocked(s *outSession) {
	if t.out[s.addr] == s {
		delete(t.out, s.addr)
		t.redials.Add(1)
	}
}

// reapIdle forgets sessions that closed and closes those idle for
// IdleTimeout, every IdleTimeout/4, until Shutdown.
func (t *Transport) reapIdle() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.IdleTimeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			t.mu.Lock()
			all := make([]*outSession, 0, len(t.out))
			for _, s := range t.out {
				all = append(all, s)
			}
			for addr, until := range t.plain {
				if now.After(until) {
					delete(t.plain, addr)
				}
			}
			t.mu.Unlock()
			for _, s := range all {
				switch {
				case s.sess.IsClosed():
					t.drop(s)
				case len(s.sem) == 0 && s.sess.NumStreams() == 0 && now.Sub(time.Unix(0, s.lastUsed.Load())) >= t.cfg.IdleTimeout:
					t.closeIdle(s)
				}
			}
		}
	}
}

// closeIdle forgets s and closes it if it still has no stream open. A
// stream opened on it in that instant fails as on a broken connection
// (memberlist's caller sees an error; a link resends).
func (t *Transport) closeIdle(s *outSession) {
	t.mu.Lock()
	idle := t.out[s.addr] == s && len(s.sem) == 0
	if idle {
		delete(t.out, s.addr)
	}
	t.mu.Unlock()
	if idle {
		_ = s.sess.Close()
	}
}

// tcpListen accepts connections until the listener closes, each handled
// in its own goroutine.
func (t *Transport) tcpListen() {
	defer t.wg.Done()
	const baseDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			delay = min(max(2*delay, baseDelay), maxDelay)
			t.cfg.Logger.Printf("[ERR] muxnet: accept: %v", err)
			tm := time.NewTimer(delay)
			select {
			case <-t.done:
				tm.Stop()
				return
			case <-tm.C:
			}
			continue
		}
		delay = 0
		t.accepted.Add(1)
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = conn.Close()
			return
		}
		t.in[conn] = true
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(conn)
	}
}

// serve tells a session from a plain stream by its first byte, and either
// runs the session (its streams into StreamCh) or hands the plain stream
// over. It forgets conn when done with it.
func (t *Transport) serve(conn net.Conn) {
	defer t.wg.Done()
	handedOver := false
	defer func() {
		t.mu.Lock()
		delete(t.in, conn)
		t.mu.Unlock()
		if !handedOver {
			_ = conn.Close()
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var got [len(preamble)]byte
	if _, err := io.ReadFull(conn, got[:1]); err != nil {
		return
	}
	if got[0] != preamble[0] {
		t.plainAccepted.Add(1)
		_ = conn.SetReadDeadline(time.Time{})
		select {
		case t.streamCh <- &replayConn{Conn: conn, r: io.MultiReader(bytes.NewReader(got[:1]), conn)}:
			handedOver = true // memberlist closes it
		case <-t.done:
		}
		return
	}
	if _, err := io.ReadFull(conn, got[1:]); err != nil {
		return
	}
	if got != preamble {
		t.cfg.Logger.Printf("[WARN] muxnet: connection from %s: unknown preamble %q", conn.RemoteAddr(), got[:])
		return
	}
	_ = conn.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	if _, err := conn.Write(preamble[:]); err != nil {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	fc := newFrameConn(conn, true, &t.inWrites)
	sess, err := yamux.Server(fc, t.ymx)
	if err != nil {
		t.cfg.Logger.Printf("[ERR] muxnet: session from %s: %v", conn.RemoteAddr(), err)
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return // the session closed: the peer went away, or Shutdown closed conn
		}
		select {
		case t.streamCh <- &inStream{Stream: st, fc: fc}:
		case <-t.done:
			_ = st.Close()
			return
		}
	}
}

// inStream is a stream a peer opened: before each Read but the first it
// sends the window updates its session holds (frameConn), since the
// peer may wait for that credit to send what the Read waits for.
// Reads must not be concurrent, as with any yamux stream.
type inStream struct {
	*yamux.Stream
	fc    *frameConn
	reads int
}

// Read reads from the stream, after sending the credit its earlier
// reads gave back.
func (c *inStream) Read(b []byte) (int, error) {
	if c.reads > 0 {
		if err := c.fc.flush(); err != nil {
			return 0, err
		}
	}
	c.reads++
	return c.Stream.Read(b)
}

// replayConn is a plain memberlist stream whose first bytes were read to
// tell it from a session; Read returns them first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// udpListen reads packets into PacketCh until the socket closes.
func (t *Transport) udpListen() {
	defer t.wg.Done()
	for {
		buf := make([]byte, udpPacketBufSize)
		n, addr, err := t.udp.ReadFrom(buf)
		ts := time.Now()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			t.cfg.Logger.Printf("[ERR] muxnet: read udp: %v", err)
			continue
		}
		if n < 1 {
			continue
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf[:n], From: addr, Timestamp: ts}:
		case <-t.done:
			return
		}
	}
}

// Shutdown closes the listeners, every session and every connection not
// yet handed to memberlist, and waits for the transport's goroutines.
// Dials after it fail with ErrClosed. Safe to call twice.
func (t *Transport) Shutdown() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.done)
	}
	out := make([]*outSession, 0, len(t.out))
	for addr, s := range t.out {
		delete(t.out, addr)
		out = append(out, s)
	}
	in := make([]net.Conn, 0, len(t.in))
	for c := range t.in {
		in = append(in, c)
	}
	t.mu.Unlock()
	for _, s := range out {
		_ = s.sess.Close()
	}
	for _, c := range in {
		_ = c.Close() // ends its session, or its handshake
	}
	_ = t.tcp.Close()
	_ = t.udp.Close()
	t.wg.Wait()
	return nil
}

// CloseConnsForTest closes the TCP connection under every outgoing session,
// as a network failure would (the sessions find out by themselves), and
// returns how many it closed.
func (t *Transport) CloseConnsForTest() int {
	t.mu.Lock()
	conns := make([]net.Conn, 0, len(t.out))
	for _, s := range t.out {
		conns = append(conns, s.conn)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// setUDPRecvBuf asks for a 2 MiB receive buffer, halving until the kernel
// takes it (as memberlist's NetTransport does).
func setUDPRecvBuf(c *net.UDPConn) error {
	var err error
	for size := udpRecvBufSize; size > 0; size /= 2 {
		if err = c.SetReadBuffer(size); err == nil {
			return nil
		}
	}
	return err
}
