package session

import (
	"errors"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

// Errors returned by Enqueue.
var (
	ErrClosed       = errors.New("session: connection closing")
	ErrSlowConsumer = errors.New("session: send queue full, connection closed (4002)")
)

// Info describes a session.
type Info struct {
	ID        string
	User      string
	Device    string
	Remote    string
	Connected time.Time
	Stamp     uint64 // from Config.Clock when registered: a later login has a larger one
}

type op uint8

const (
	opMessage op = iota
	opPing
	opPong   // the JSON {"type":"pong"}
	opWSPong // a WebSocket pong frame
	opClose
)

type item struct {
	op   op
	data []byte
	dc   Disconnect // opClose
}

// Session is one client WebSocket. Writes go through a bounded queue drained
// by one writer goroutine, started when the queue goes from empty to
// non-empty and gone when it is empty again, so an idle session costs no
// goroutine for writing.
type Session struct {
	hub  *Hub
	conn *gws.Conn
	info Info

	mu       sync.Mutex // guards the fields below
	queue    []item
	messages int         // opMessage items in queue
	closing  *Disconnect // set once a close is queued or the conn is gone
	writing  bool        // a writer goroutine runs
	finished bool        // ReadLoop returned; no new writer may start
	writers  sync.WaitGroup
	pinger   *time.Timer
}

// Enqueue queues a frame for the client. It never blocks: a full queue
// closes the session with 4002 and returns ErrSlowConsumer; a closing one
// returns ErrClosed. frame must not be modified afterwards.
func (s *Session) Enqueue(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
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

// evict sends the "evicted" frame, then closes with 4000.
func (s *Session) evict() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing == nil {
		s.messages++
		s.pushLocked(item{op: opMessage, data: frameEvicted})
		s.closeLocked(disconnectEvicted)
	}
}

// control queues a ping or a pong; it takes no slot of the bounded queue.
func (s *Session) control(o op) {
	s.mu.Lock()
	if s.closing == nil {
		s.pushLocked(item{op: o})
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
	if s.writing || s.finished {
		return
	}
	s.writing = true
	s.writers.Add(1)
	go s.write()
}

// write drains the queue until it is empty, then returns.
func (s *Session) write() {
	defer s.writers.Done()
	var batch []item
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		batch, s.queue = s.queue, batch[:0]
		s.mu.Unlock()

		for i, it := range batch {
			if !s.writeItem(it) {
				s.abandon()
				clear(batch[i:])
				break
			}
			if it.op == opMessage {
				s.mu.Lock()
				s.messages--
				s.mu.Unlock()
			}
		}
		clear(batch)
	}
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
	case opPing:
		err = s.conn.WritePing(nil)
	case opPong:
		err = s.conn.WriteMessage(gws.OpcodeText, framePong)
	case opWSPong:
		err = s.conn.WritePong(nil)
	case opClose:
		_ = s.conn.WriteClose(it.dc.Code, []byte(it.dc.Reason))
		return false
	}
	return err == nil
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
	if s.pinger != nil {
		s.pinger.Stop()
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

// schedulePing arms the next server ping.
func (s *Session) schedulePing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return
	}
	if s.pinger == nil {
		s.pinger = time.AfterFunc(s.hub.cfg.PingInterval, s.ping)
		return
	}
	s.pinger.Reset(s.hub.cfg.PingInterval)
}

func (s *Session) ping() {
	s.control(opPing)
	s.schedulePing()
}
