// Package upstream delivers client messages and session events to the
// backend: it batches them, signs each batch, POSTs it to the configured
// URL, retries with backoff while the backend is down, and carries the
// backend's answer back to the clients (ack, reply, or an error frame).
//
// Events of one session reach the backend in the order they happened:
// there is one queue per node and one POST in flight at a time, and a
// batch that fails is retried, whole and alone, before anything queued
// after it goes out. The queue is bounded (Config.Queue): a client message
// that finds it full is refused at once (the client gets an error frame,
// its connection stays); a connect or disconnect event is dropped and
// counted. The disconnect events of a node that died are generated here,
// by the one survivor the cluster picks (NodeFailed), from a list kept
// apart from the queue and fed into it as room allows.
//
// Files: upstream.go (Sender, Config, the queue and its loop), post.go
// (one signed POST and what its answer means), event.go (the events and
// their JSON).
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"wsmesh/internal/throttle"
	"wsmesh/session"
)

// Event types, as Config.Events names them.
const (
	TypeMessage    = "message"
	TypeConnect    = "connect"
	TypeDisconnect = "disconnect"
)

// Errors a client message can be refused with; their text goes to the
// client in an error frame.
var (
	ErrQueueFull = errors.New("backend queue full: message not sent, try again later")
	ErrClosed    = errors.New("node shutting down: message not sent")
)

// Config configures a Sender. Zero values take the defaults named.
type Config struct {
	URL      string        // required: http or https
	Secret   []byte        // required: at least 32 bytes; signs every batch
	Events   []string      // which events to send; default all: message, connect, disconnect
	Timeout  time.Duration // default 5s: one POST, answer included
	RetryFor time.Duration // default 1m: a batch not accepted RetryFor after its oldest event was queued is given up (after one try at least)
	MaxBatch int           // default 100 events per POST
	Queue    int           // default 10000 events waiting
	Node     string        // this node's name, in every event

	// Deliver queues a frame (an ack, a reply, an error) to a session of
	// this node; it must not block. Required.
	Deliver func(user, session string, frame []byte)
	// OnPost, if set, hears of every POST: how long it took and what came
	// of it ("ok", "refused", "error"). It must not block.
	OnPost func(took time.Duration, result string)

	Client *http.Client     // default: one with Timeout that follows no redirect
	Logger *slog.Logger     // default slog.Default()
	Now    func() time.Time // default time.Now (tests)
}

// Sender sends the events of this node's sessions to the backend. Create
// it with New, Start its loop, Close it at shutdown. It implements
// session.Upstream; all its methods are safe for concurrent use and never
// block.
type Sender struct {
	cfg    Config
	log    *slog.Logger
	events map[string]bool // the types Config.Events names

	mu      sync.Mutex
	queue   []*event    // waiting, oldest first; at most cfg.Queue
	failed  []failedRun // sessions of dead nodes whose disconnect events are not queued yet
	closed  bool        // Close was called: nothing new is taken
	wake    chan struct{}
	nextID  uint64
	started bool

	stop    context.CancelFunc // ends the loop's wait and its POST (Close, once drained or out of time)
	stopCtx context.Context
	done    chan struct{} // closed when the loop has returned

	full  throttle.Every // the "queue full" warning
	stats stats
}

// failedRun is a dead node's sessions still owed a disconnect event.
type failedRun struct {
	node     string
	sessions []Gone
}

// Gone is a session of a node that died, as the cluster's table knew it.
type Gone struct {
	User, Device, Session string
	Connected             time.Time
}

// stats are the running totals.
type stats struct {
	sent, retried                                     atomic.Uint64
	sentByType                                        [3]atomic.Uint64
	dropFull, dropRefused, dropUnreachable, dropClose atomic.Uint64
}

// Stats are a Sender's running totals, for metrics.
type Stats struct {
	Sent       map[string]uint64 // events the backend accepted, by type
	Retried    uint64            // POSTs that failed and were tried again
	Dropped    map[string]uint64 // events given up, by reason: queue_full, refused, unreachable, shutdown
	QueueDepth int               // events waiting now
}

// New validates cfg and fills its defaults.
func New(cfg Config) (*Sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream: url %q must be an http:// or https:// URL", cfg.URL)
	}
	if len(cfg.Secret) < 32 {
		return nil, fmt.Errorf("upstream: secret must be at least 32 bytes, got %d", len(cfg.Secret))
	}
	if cfg.Deliver == nil {
		return nil, errors.New("upstream: Config.Deliver is required")
	}
	if cfg.Events == nil {
		cfg.Events = []string{TypeMessage, TypeConnect, TypeDisconnect}
	}
	events := map[string]bool{}
	for _, e := range cfg.Events {
		if e != TypeMessage && e != TypeConnect && e != TypeDisconnect {
			return nil, fmt.Errorf("upstream: unknown event type %q (message, connect, disconnect)", e)
		}
		events[e] = true
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = time.Minute
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout: cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // a 3xx is an answer, not accepted: retried
			},
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{
		cfg: cfg, log: cfg.Logger.With("component", "upstream"), events: events,
		wake: make(chan struct{}, 1), stopCtx: ctx, stop: cancel, done: make(chan struct{}),
	}, nil
}

// Start starts the loop that sends the queue. Call it once.
func (s *Sender) Start() {
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	go s.loop()
}

// Close stops taking events and sends what is queued (the disconnect
// events of the sessions the node just closed, say) until ctx ends; what
// is left then is dropped, counted and logged. It waits for the loop to
// return. Safe to call twice.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.poke()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.stop()
	<-s.done
	return ctx.Err()
}

// Connected queues a session's connect event.
func (s *Sender) Connected(i session.Info) {
	if s.events[TypeConnect] {
		s.add(&event{Type: TypeConnect, ID: i.Session + ":connect", info: i, at: s.cfg.Now()}, false)
	}
}

// Message queues a client message; ErrQueueFull or ErrClosed if it cannot.
func (s *Sender) Message(i session.Info, clientID string, data []byte) error {
	if !s.events[TypeMessage] {
		return errors.New("no backend for client messages: upstream.events does not list message")
	}
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("%s:m%d", i.Session, s.nextID)
	s.mu.Unlock()
	return s.add(&event{Type: TypeMessage, ID: id, info: i, at: s.cfg.Now(), ClientID: clientID, Data: data}, true)
}

// Disconnected queues a session's disconnect event.
func (s *Sender) Disconnected(i session.Info, code uint16, reason string) {
	if s.events[TypeDisconnect] {
		now := s.cfg.Now()
		s.add(&event{Type: TypeDisconnect, ID: i.Session + ":disconnect", info: i, at: now,
			Code: int(code), Reason: reason, DurationMS: now.Sub(i.Connected).Milliseconds()}, false)
	}
}

// NodeFailed owes a disconnect event (code 1006, reason "node <name>
// failed") to each of the sessions a dead node held. The cluster calls it
// on one survivor only. The events go into the queue as room allows,
// after what is queued now; their ids are the ones the dead node would
// have used, so a backend that got some already can drop the repeats.
func (s *Sender) NodeFailed(node string, sessions []Gone) {
	if !s.events[TypeDisconnect] || len(sessions) == 0 {
		return
	}
	s.mu.Lock()
	s.failed = append(s.failed, failedRun{node: node, sessions: sessions})
	s.mu.Unlock()
	s.log.Info("sending the disconnect events of a failed node's sessions", "member", node, "sessions", len(sessions))
	s.poke()
}

// add queues e; false, with an error for a message, if the queue is full
// or closed.
func (s *Sender) add(e *event, isMessage bool) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.stats.dropClose.Add(1)
		return ErrClosed
	case len(s.queue) >= s.cfg.Queue:
		s.mu.Unlock()
		s.stats.dropFull.Add(1)
		if n, ok := s.full.Allow(10 * time.Second); ok {
			s.log.Warn("backend queue full: refusing client messages and dropping events", "queue", s.cfg.Queue, "dropped", n, "key", "upstream.queue")
		}
		if isMessage {
			return ErrQueueFull
		}
		return nil
	}
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	s.poke()
	return nil
}

// poke wakes the loop.
func (s *Sender) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the running totals.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	depth := len(s.queue)
	for _, f := range s.failed {
		depth += len(f.sessions)
	}
	s.mu.Unlock()
	return Stats{
		Sent: map[string]uint64{
			TypeMessage: s.stats.sentByType[0].Load(), TypeConnect: s.stats.sentByType[1].Load(), TypeDisconnect: s.stats.sentByType[2].Load(),
		},
		Retried: s.stats.retried.Load(),
		Dropped: map[string]uint64{
			"queue_full": s.stats.dropFull.Load(), "refused": s.stats.dropRefused.Load(),
			"unreachable": s.stats.dropUnreachable.Load(), "shutdown": s.stats.dropClose.Load(),
		},
		QueueDepth: depth,
	}
}

// loop sends batches until Close: one at a time, each retried until the
// backend takes it or RetryFor passes.
func (s *Sender) loop() {
	defer close(s.done)
	for {
		batch, closing := s.take()
		if len(batch) == 0 {
			if closing {
				return
			}
			select {
			case <-s.wake:
			case <-s.stopCtx.Done():
				s.dropRest()
				return
			}
			continue
		}
		if !s.deliver(batch) {
			s.dropRest()
			return
		}
	}
}

// take returns the next batch (taken out of the queue, topped up from
// failed nodes' sessions) and whether Close was called.
func (s *Sender) take() ([]*event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.failed) > 0 && len(s.queue) < s.cfg.MaxBatch {
		f := &s.failed[0]
		n := min(len(f.sessions), s.cfg.MaxBatch-len(s.queue))
		now := s.cfg.Now()
		for _, g := range f.sessions[:n] {
			s.queue = append(s.queue, &event{Type: TypeDisconnect, ID: g.Session + ":disconnect", at: now,
				info:   session.Info{User: g.User, Device: g.Device, Session: g.Session, Connected: g.Connected},
				origin: f.node, Code: int(session.CloseAbnormal), Reason: "node " + f.node + " failed",
				DurationMS: now.Sub(g.Connected).Milliseconds()})
		}
		f.sessions = f.sessions[n:]
		if len(f.sessions) == 0 {
			s.failed = slices.Delete(s.failed, 0, 1)
		}
	}
	n := min(len(s.queue), s.cfg.MaxBatch)
	batch := slices.Clone(s.queue[:n])
	clear(s.queue[:n])
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil // let the array go
	}
	return batch, s.closed
}

// dropRest drops what is queued when the loop stops early (Close ran out
// of time), and says so.
func (s *Sender) dropRest() {
	s.mu.Lock()
	n := len(s.queue)
	for _, f := range s.failed {
		n += len(f.sessions)
	}
	s.queue, s.failed = nil, nil
	s.mu.Unlock()
	if n > 0 {
		s.stats.dropClose.Add(uint64(n))
		s.log.Warn("shutdown: events not sent to the backend in time, dropped", "events", n)
	}
}

// backoff is the wait before retry number n (from 1): 100 ms doubling,
// at most 5 s.
func backoff(n int) time.Duration {
	return min(100*time.Millisecond<<min(n-1, 6), 5*time.Second)
}
