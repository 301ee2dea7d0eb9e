package session

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/panics"
)

// Errors returned by Enqueue.
var (
	ErrClosed       = errors.New("session: connection closing")
	ErrSlowConsumer = errors.New("session: send queue full, connection closed (4002)")
)

// Info describes a session.
type Info struct {
	Session   string // the session id: random, unique cluster-wide (newSessionID)
	User      string
	Device    string
	Remote    string
	Connected time.Time
	Stamp     uint64 // from Config.Clock when registered: a later login has a larger one
}

type op uint8

const (
	opMessage op = iota
	opClose
)

type item struct {
	op   op
	data []byte
	dc   Disconnect // opClose
}

// owed are the control replies a session owes its client. They take no room
// in the queue: at most one of each is pending, so a client that sends pings
// and never reads costs a fixed amount of memory, not one item per ping.
// RFC 6455 §5.5.3 allows answering only the most recent ping.
type owed struct {
	ping     bool   // a server ping
	pong     bool   // the JSON {"type":"pong"}
	wsPong   bool   // a WebSocket pong frame, echoing wsPongOf
	wsPongOf []byte // the payload of the most recent client ping (≤ 125 bytes)
}

func (o owed) any() bool { return o.ping || o.pong || o.wsPong }

// count is how many frames o owes.
func (o owed) count() int {
	n := 0
	if o.ping {
		n++
	}
	if o.pong {
		n++
	}
	if o.wsPong {
		n++
	}
	return n
}

// Session is one client WebSocket. Writes go through a bounded queue drained
// by one writer goroutine, started when the queue goes from empty to
// non-empty and gone when it is empty again, so an idle session costs no
// goroutine for writing.
type Session struct {
	hub  *Hub
	conn *gws.Conn
	info Info

	mu       sync.Mutex  // guards the fields below
	queue    []item      // messages, then at most one close
	messages int         // opMessage items in queue
	owed     owed        // control replies not written yet
	closing  *Disconnect // set once a close is queued or the conn is gone
	writers  sync.WaitGroup
	timer    *time.Timer // fires for the next server ping or the token's expiry, whichever is first
	pingDue  int64       // Unix nanoseconds of the next server ping
	expires  int64       // Unix nanoseconds of the token's exp; 0: none
	rooms    *roomState  // nil while in no room and the token allows none (rooms.go)

	// The client's rate limit (Config.MaxClientRate), a token bucket
	// touched only by the read loop's goroutine.
	allowance float32 // frames the client may still send now
	writing   bool    // a writer goroutine runs; guarded by mu
	finished  bool    // ReadLoop returned; no new writer may start; guarded by mu
	lastFrame int64   // Unix nanoseconds of its last frame

	// The fields are ordered so that a Session is 256 bytes, a size class
	// of Go's allocator: one more word would make every idle connection
	// 32 bytes larger (TestSessionSize).
}

// Enqueue queues a frame for the client. It never blocks: a full queue
// closes the session with 4002 and returns ErrSlowConsumer; a closing one
// returns ErrClosed. frame must not be modified afterwards.
func (s *Session) Enqueue(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueueLocked(frame)
}

// enqueueLocked is Enqueue with s.mu held.
func (s *Session) enqueueLocked(frame []byte) error {
	if s.closing != nil {
		return ErrClosed
	}
	if s.messages >= s.hub.cfg.SendQueue {
		s.closeLocked(disconnectSlow)
		return ErrSlowConsumer
	}
	s.messages++
	s.pushLocked(item{op: opMessage, data: frame})
	return nil
}

// Close sends the client dc's code and reason after what is queued, then
// closes the connection. Safe to call more than once: the first close wins.
func (s *Session) Close(dc Disconnect) {
	s.mu.Lock()
	s.closeLocked(dc)
	s.mu.Unlock()
}

// isClosing reports whether a close is queued or the connection is gone.
func (s *Session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing != nil
}

// closeFirst closes the session with dc and reports whether this call
// did: false if it was closing already.
func (s *Session) closeFirst(dc Disconnect) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return false
	}
	s.closeLocked(dc)
	return true
}

// evict sends the "evicted" frame, then closes with 4000. It reports
// whether it did: false if the session was closing already (evicted
// before, or closed for another reason).
func (s *Session) evict() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return false
	}
	s.messages++
	s.pushLocked(item{op: opMessage, data: frameEvicted})
	s.closeLocked(disconnectEvicted)
	return true
}

// owePong asks the writer for the JSON {"type":"pong"}.
func (s *Session) owePong() { s.owe(func(o *owed) { o.pong = true }) }

// oweWSPong asks the writer for a pong frame echoing payload (RFC 6455
// §5.5.3), replacing a pong owed for an earlier ping.
func (s *Session) oweWSPong(payload []byte) {
	s.owe(func(o *owed) { o.wsPong, o.wsPongOf = true, append(o.wsPongOf[:0], payload...) })
}

// owe records a control reply and starts the writer if none runs.
func (s *Session) owe(set func(*owed)) {
	s.mu.Lock()
	if s.closing == nil {
		set(&s.owed)
		s.startWriterLocked()
	}
	s.mu.Unlock()
}

// closeLocked queues the close; s.mu must be held.
func (s *Session) closeLocked(dc Disconnect) {
	if s.closing != nil {
		return
	}
	s.closing = &dc
	s.pushLocked(item{op: opClose, dc: dc})
}

// pushLocked appends to the queue and starts the writer if none runs;
// s.mu must be held.
func (s *Session) pushLocked(it item) {
	s.queue = append(s.queue, it)
	s.startWriterLocked()
}

// startWriterLocked starts the writer unless one runs or the connection is
// gone; s.mu must be held.
func (s *Session) startWriterLocked() {
	if s.writing || s.finished {
		return
	}
	s.writing = true
	s.writers.Add(1)
	go s.write()
}

// write drains the queue and the owed replies until both are empty, then
// returns. Owed control replies go before the queued messages.
func (s *Session) write() {
	defer s.writers.Done()
	defer s.recoverWriter()
	var batch []item
	var pongBuf []byte
	for {
		s.mu.Lock()
		if len(s.queue) == 0 && !s.owed.any() {
			s.writing = false
			s.mu.Unlock()
			return
		}
		o := s.owed
		if o.wsPong { // keep the payload: the next ping may reuse s.owed's buffer
			pongBuf = append(pongBuf[:0], o.wsPongOf...)
			o.wsPongOf = pongBuf
		}
		s.owed = owed{wsPongOf: s.owed.wsPongOf[:0]}
		batch, s.queue = s.queue, batch[:0]
		s.mu.Unlock()

		cc, _ := s.conn.NetConn().(*corkConn)
		corked := cc != nil && len(batch)+o.count() > 1
		if corked {
			cc.cork() // one write for the whole batch
		}
		ok := s.writeOwed(o)
		for i, it := range batch {
			if !ok {
				clear(batch[i:])
				break
			}
			if ok = s.writeItem(it); ok && it.op == opMessage {
				s.mu.Lock()
				s.messages--
				s.mu.Unlock()
			}
		}
		if corked && cc.uncork() != nil {
			ok = false
		}
		if !ok {
			s.abandon()
		}
		clear(batch)
	}
}

// identity is who s is, for a log line: user, device, remote, session.
func (s *Session) identity() []any {
	return []any{"user", s.info.User, "device", s.info.Device, "remote", s.info.Remote, "session", s.info.Session}
}

// recoverWriter ends a panicking writer: it logs the panic and cuts the
// connection, whose read loop then ends and closes the session. The process
// and the other sessions go on.
func (s *Session) recoverWriter() {
	v := recover()
	if v == nil {
		return
	}
	s.hub.log.Error("session writer panicked: closing this connection", append(s.identity(), panics.Attrs(v)...)...)
	s.mu.Lock()
	s.writing = false
	if s.closing == nil {
		dc := disconnectInternal
		s.closing = &dc
	}
	s.mu.Unlock()
	_ = s.conn.NetConn().Close()
}

// writeOwed writes the owed control replies; false means the connection is gone.
func (s *Session) writeOwed(o owed) bool {
	if !o.any() {
		return true
	}
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.hub.cfg.WriteTimeout)); err != nil {
		return false
	}
	if o.wsPong && s.conn.WritePong(o.wsPongOf) != nil {
		return false
	}
	if o.pong && s.conn.WriteMessage(gws.OpcodeText, framePong) != nil {
		return false
	}
	if o.ping && s.conn.WritePing(nil) != nil {
		return false
	}
	return true
}

// writeItem writes one item; false means the connection is gone.
func (s *Session) writeItem(it item) bool {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.hub.cfg.WriteTimeout)); err != nil {
		return false
	}
	var err error
	switch it.op {
	case opMessage:
		err = s.conn.WriteMessage(gws.OpcodeText, it.data)
	case opClose:
		s.writeCloseLingering(it.dc)
		return false
	}
	return err == nil
}

// closeLinger bounds how long a connection the server closed stays open
// for the client's close frame (writeCloseLingering).
const closeLinger = time.Second

// writeCloseLingering sends the close frame with dc's code and reason,
// then shuts the connection's write side and leaves the read loop to
// take what the client still sends, for at most closeLinger, until the
// client's own close frame or EOF ends it. Closing at once instead would
// make the kernel answer data still in flight from the client (a flood
// that earned a 4008, say) with a reset, which can destroy the close
// frame in the client's receive buffer before the client reads it: it
// would see 1006 and not know why (RFC 6455 §7.1.1: the server closes
// the TCP connection after the closing handshake).
func (s *Session) writeCloseLingering(dc Disconnect) {
	payload := make([]byte, 2, 2+len(dc.Reason))
	binary.BigEndian.PutUint16(payload, dc.Code)
	payload = append(payload, dc.Reason...)
	if err := s.conn.WriteMessage(gws.OpcodeCloseConnection, payload); err != nil {
		_ = s.conn.NetConn().Close()
		return
	}
	if cw, ok := s.conn.NetConn().(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = s.conn.SetReadDeadline(time.Now().Add(closeLinger))
		return
	}
	_ = s.conn.NetConn().Close() // no half-close (not TCP): close at once
}

// abandon drops what is queued after the connection closed or failed.
func (s *Session) abandon() {
	s.mu.Lock()
	if s.closing == nil {
		s.closing = &Disconnect{}
	}
	clear(s.queue)
	s.queue = s.queue[:0]
	s.messages = 0
	s.owed = owed{}
	s.mu.Unlock()
}

// finish runs after ReadLoop returned: no writer may start again, and it
// waits for a running one, which ends at once on the closed connection.
func (s *Session) finish() {
	s.mu.Lock()
	s.finished = true
	if s.closing == nil {
		s.closing = &Disconnect{}
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.writers.Wait()
}

// serverDisconnect returns the close the server queued, if any.
func (s *Session) serverDisconnect() (Disconnect, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing == nil || s.closing.Code == 0 {
		return Disconnect{}, false
	}
	return *s.closing, true
}

// startTimer arms the session's timer for the first server ping, and
// for the token's expiry if that comes first.
func (s *Session) startTimer(expires time.Time) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !expires.IsZero() {
		s.expires = expires.UnixNano()
	}
	s.pingDue = now + int64(s.hub.cfg.PingInterval)
	s.armLocked(now)
}

// armLocked sets the timer to fire at the next ping or at the token's
// expiry plus Leeway, whichever is first; s.mu must be held.
func (s *Session) armLocked(now int64) {
	if s.finished {
		return
	}
	next := s.pingDue
	if s.expires != 0 && s.expires+int64(Leeway) < next {
		next = s.expires + int64(Leeway)
	}
	d := time.Duration(max(next-now, 0))
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.tick)
		return
	}
	s.timer.Reset(d)
}

// tick closes the session with 4001 "token expired" if its token has
// expired (plus Leeway), else sends a server ping if one is due, and
// re-arms the timer.
func (s *Session) tick() {
	now := time.Now().UnixNano()
	s.mu.Lock()
	expired := s.expires != 0 && now >= s.expires+int64(Leeway) && s.closing == nil
	switch {
	case expired:
		s.closeLocked(disconnectExpired)
	case s.closing != nil:
	default:
		if now >= s.pingDue {
			s.owed.ping = true
			s.startWriterLocked()
			s.pingDue = now + int64(s.hub.cfg.PingInterval)
		}
		s.armLocked(now)
	}
	s.mu.Unlock()
	if expired {
		s.hub.stats.expired.Add(1)
		s.hub.log.Info("session token expired: closing with 4001", s.identity()...)
	}
}

// refreshed takes a new token's expiry and re-arms the timer; false if
// the session is closing already.
func (s *Session) refreshed(expires time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return false
	}
	s.expires = expires.UnixNano()
	s.armLocked(time.Now().UnixNano())
	return true
}

// allow takes one frame from the client's token bucket: rate frames per
// second, burst twice that. False: the client is over its rate. Called
// only from the read loop's goroutine.
func (s *Session) allow(rate float64) bool {
	now := time.Now().UnixNano()
	burst := 2 * rate
	if s.lastFrame == 0 {
		s.allowance = float32(burst)
	} else {
		s.allowance = float32(min(burst, float64(s.allowance)+rate*float64(now-s.lastFrame)/1e9))
	}
	s.lastFrame = now
	if s.allowance < 1 {
		return false
	}
	s.allowance--
	return true
}
