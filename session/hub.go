// Package session owns the WebSocket connections of this node: the upgrade
// and its token check, one Session per user and device (a newer login evicts
// the older), heartbeats and idle timeouts, and a bounded send queue per
// connection. It knows nothing of other nodes: it reports sessions opening
// and closing to an Observer and delivers frames it is handed.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/realip"
	"wsmesh/internal/throttle"
)

// Config configures a Hub. Zero values take the defaults named.
type Config struct {
	PingInterval    time.Duration  // default 25s
	IdleTimeout     time.Duration  // default 60s: close a connection silent this long
	WriteTimeout    time.Duration  // default 10s: give up a write to a stuck client
	SendQueue       int            // default 256 messages per connection
	MaxMessageBytes int            // default 65536: larger client frames close with 1009
	MaxConnections  int            // default: FileLimitConnections(); more WebSockets get 503
	SingleDevice    bool           // one session per user, not per user and device
	AllowedOrigins  []string       // default: any Origin
	TrustedProxies  realip.Proxies // whose X-Forwarded-For names the client in logs; default none
	Auth            *Authenticator
	Observer        Observer      // default: none
	Clock           func() uint64 // stamps logins, strictly increasing; default: a local counter
	Logger          *slog.Logger  // default: slog.Default()
}

// Observer hears of sessions opening and closing. Calls come from the
// sessions' goroutines and must not block.
type Observer interface {
	SessionOpened(Info)
	SessionClosed(Info)
}

// Hub holds this node's sessions. It is an http.Handler for GET /ws.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	upgrader *gws.Upgrader
	seed     maphash.Seed
	shards   [64]shard
	nextID   atomic.Uint64
	count    atomic.Int64 // registered sessions
	conns    atomic.Int64 // admitted connections, from the upgrade until their goroutines end
	stats    hubStats
	full     throttle.Every // the "connection limit reached" warning

	testHookRead func(*Session) // runs on the read loop goroutine before ReadLoop; tests only

	mu     sync.Mutex // guards closed and the Add side of active
	closed bool
	active sync.WaitGroup // one per upgraded connection, until its goroutines end
}

type shard struct {
	mu    sync.RWMutex
	users map[string][]*Session // user -> live sessions, at most one per device
}

// New validates cfg, fills defaults and returns a Hub.
func New(cfg Config) (*Hub, error) {
	if cfg.Auth == nil {
		return nil, errors.New("session: Config.Auth is required")
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 256
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 10
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = FileLimitConnections()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		var n atomic.Uint64
		cfg.Clock = func() uint64 { return n.Add(1) }
	}
	h := &Hub{cfg: cfg, log: cfg.Logger.With("component", "session"), seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].users = map[string][]*Session{}
	}
	h.upgrader = gws.NewUpgrader((*events)(h), &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxMessageBytes,
		ReadBufferSize:     1024, // clients send little: pings and small frames; 4 KiB of 13 per idle connection otherwise
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{h.log},
	})
	return h, nil
}

// hubStats are the hub's running totals.
type hubStats struct {
	upgrades, authFailures, evictions, slowConsumers, closed, refused, clientFrames atomic.Uint64
}

// Stats are running totals since the hub started, for metrics.
type Stats struct {
	Upgrades      uint64 // WebSocket upgrades completed, refused tokens included
	AuthFailures  uint64 // upgrades closed with 4001
	Evictions     uint64 // sessions closed with 4000 (newer login here or elsewhere)
	SlowConsumers uint64 // sessions closed with 4002 (send queue overflowed)
	Closed        uint64 // sessions ended, for any reason
	Refused       uint64 // upgrades refused with 503: MaxConnections reached
	ClientFrames  uint64 // frames read from clients: messages, pings and pongs
}

// Stats returns the running totals.
func (h *Hub) Stats() Stats {
	return Stats{
		Upgrades:      h.stats.upgrades.Load(),
		AuthFailures:  h.stats.authFailures.Load(),
		Evictions:     h.stats.evictions.Load(),
		SlowConsumers: h.stats.slowConsumers.Load(),
		Closed:        h.stats.closed.Load(),
		Refused:       h.stats.refused.Load(),
		ClientFrames:  h.stats.clientFrames.Load(),
	}
}

// Len returns the number of live sessions.
func (h *Hub) Len() int { return int(h.count.Load()) }

// MaxConnections returns the most WebSockets the hub holds at once.
func (h *Hub) MaxConnections() int { return h.cfg.MaxConnections }

func (h *Hub) shard(user string) *shard {
	return &h.shards[maphash.String(h.seed, user)%uint64(len(h.shards))]
}

// ServeHTTP upgrades GET /ws. A bad Origin is refused with 403 and a
// malformed handshake with 400, 405 or 426 before the upgrade, and so is a
// connection beyond MaxConnections, with 503; all with a JSON body. A bad
// token is answered after the upgrade, with close code 4001.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.originAllowed(r.Header.Get("Origin")) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if err := checkHandshake(w, r); err != nil {
		writeError(w, err.status, err.msg)
		return
	}
	if n := h.conns.Add(1); n > int64(h.cfg.MaxConnections) {
		h.conns.Add(-1)
		h.refuseFull(w)
		return
	}
	remote := h.cfg.TrustedProxies.ClientAddr(r)
	id, authErr := h.cfg.Auth.Verify(TokenFromRequest(r))

	h.mu.Lock()
	closed := h.closed
	if !closed {
		h.active.Add(1)
	}
	h.mu.Unlock()

	conn, err := h.upgrader.Upgrade(w, r)
	if err != nil {
		h.log.Debug("websocket upgrade failed", "remote", remote, "err", err)
		h.conns.Add(-1)
		if !closed {
			h.active.Done()
		}
		return
	}
	h.stats.upgrades.Add(1)
	switch {
	case closed:
		_ = conn.WriteClose(disconnectShutdown.Code, []byte(disconnectShutdown.Reason))
		h.conns.Add(-1)
		return
	case authErr != nil:
		h.stats.authFailures.Add(1)
		h.log.Warn("websocket auth failed", "remote", remote, "reason", authErr.Error())
		_ = conn.WriteClose(CloseUnauthorized, []byte(authErr.Error()))
		h.conns.Add(-1)
		h.active.Done()
		return
	}
	s := &Session{
		hub:  h,
		conn: conn,
		info: Info{
			ID:        strconv.FormatUint(h.nextID.Add(1), 10),
			User:      id.User,
			Device:    id.Device,
			Remote:    remote,
			Connected: time.Now(),
		},
	}
	conn.Session().Store("s", s)
	h.open(s)
	go func() {
		defer h.active.Done()
		defer h.conns.Add(-1)
		h.readLoop(s)
		s.finish()
		_ = conn.NetConn().Close() // closed already, unless the read loop panicked
	}()
}

// readLoop runs gws's read loop for s. A panic in it closes this
// connection with 1011 and is logged; the process and the other sessions
// go on.
func (h *Hub) readLoop(s *Session) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		h.log.Error("session read loop panicked: closing this connection", "user", s.info.User, "device", s.info.Device,
			"remote", s.info.Remote, "session", s.info.ID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		s.Close(disconnectInternal)
		(*events)(h).OnClose(s.conn, fmt.Errorf("panic: %v", v))
	}()
	if h.testHookRead != nil {
		h.testHookRead(s)
	}
	s.conn.ReadLoop()
}

// refuseFull answers an upgrade beyond MaxConnections: 503, and a warning
// at most every 10 s saying how many were refused since the last one.
func (h *Hub) refuseFull(w http.ResponseWriter) {
	h.stats.refused.Add(1)
	if n, ok := h.full.Allow(10 * time.Second); ok {
		h.log.Warn("connection limit reached: refusing new WebSockets with 503",
			"limit", h.cfg.MaxConnections, "refused", n, "key", "session.max_connections")
	}
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable,
		fmt.Sprintf("node at its connection limit (%d, session.max_connections): try again later or another node", h.cfg.MaxConnections))
}

func (h *Hub) originAllowed(origin string) bool {
	if len(h.cfg.AllowedOrigins) == 0 || origin == "" {
		return true // no list, or not a browser: browsers always send Origin
	}
	return slices.ContainsFunc(h.cfg.AllowedOrigins, func(o string) bool { return strings.EqualFold(o, origin) })
}

// register stamps s, adds it and evicts the session it replaces, if any.
// The stamp is taken under the shard lock, so on one node a later login of
// a user always has the larger stamp.
func (h *Hub) register(s *Session) {
	sh := h.shard(s.info.User)
	sh.mu.Lock()
	s.info.Stamp = h.cfg.Clock()
	list := sh.users[s.info.User]
	var evicted []*Session
	kept := list[:0]
	for _, old := range list {
		if h.cfg.SingleDevice || old.info.Device == s.info.Device {
			evicted = append(evicted, old)
		} else {
			kept = append(kept, old)
		}
	}
	sh.users[s.info.User] = append(kept, s)
	sh.mu.Unlock()
	h.count.Add(int64(1 - len(evicted)))

	for _, old := range evicted {
		old.evict()
		h.stats.evictions.Add(1)
		h.log.Info("session evicted", "user", old.info.User, "device", old.info.Device,
			"remote", old.info.Remote, "session", old.info.ID, "by_session", s.info.ID, "by_remote", s.info.Remote)
	}
}

// unregister removes s if it is still registered; false if it was replaced.
func (h *Hub) unregister(s *Session) bool {
	sh := h.shard(s.info.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.users[s.info.User]
	i := slices.Index(list, s)
	if i < 0 {
		return false
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(sh.users, s.info.User)
	} else {
		sh.users[s.info.User] = list
	}
	h.count.Add(-1)
	return true
}

// Evict closes user's session with that id as a duplicate login (the
// "evicted" frame, then 4000): a newer login of its key won on another
// node. It reports whether such a session was here. Safe to call twice.
func (h *Hub) Evict(user, id string) bool {
	sh := h.shard(user)
	sh.mu.RLock()
	i := slices.IndexFunc(sh.users[user], func(s *Session) bool { return s.info.ID == id })
	var s *Session
	if i >= 0 {
		s = sh.users[user][i]
	}
	sh.mu.RUnlock()
	if s == nil {
		return false
	}
	s.evict()
	h.stats.evictions.Add(1)
	h.log.Info("session evicted", "user", s.info.User, "device", s.info.Device, "remote", s.info.Remote,
		"session", s.info.ID, "by", "a newer login on another node")
	return true
}

// Delivery is the outcome of handing a frame to one session.
type Delivery struct {
	Device  string
	Session string
	Err     error // nil: queued for the client
}

// Deliver queues frame to user's sessions (only device's, if device is not
// empty) and says what happened to each. No sessions: an empty result.
// It never blocks on a client.
func (h *Hub) Deliver(user, device string, frame []byte) []Delivery {
	sh := h.shard(user)
	sh.mu.RLock()
	var targets [4]*Session
	list := targets[:0]
	for _, s := range sh.users[user] {
		if device == "" || s.info.Device == device {
			list = append(list, s)
		}
	}
	sh.mu.RUnlock()
	if len(list) == 0 {
		return nil
	}
	out := make([]Delivery, len(list))
	for i, s := range list {
		out[i] = Delivery{Device: s.info.Device, Session: s.info.ID, Err: s.Enqueue(frame)}
		if errors.Is(out[i].Err, ErrSlowConsumer) {
			h.stats.slowConsumers.Add(1)
			h.log.Warn("session send queue full, closing", "user", s.info.User, "device", s.info.Device,
				"remote", s.info.Remote, "session", s.info.ID, "queue", h.cfg.SendQueue)
		}
	}
	return out
}

// Shutdown refuses new sessions, closes every session with 1012 after what
// is queued for it, and waits for their goroutines. If ctx ends first it
// cuts the remaining connections and returns ctx.Err(). Safe to call twice.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()

	var all []*Session
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, list := range sh.users {
			all = append(all, list...)
		}
		sh.mu.RUnlock()
	}
	for _, s := range all {
		s.Close(disconnectShutdown)
	}
	done := make(chan struct{})
	go func() {
		h.active.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	for _, s := range all {
		_ = s.conn.NetConn().Close()
	}
	<-done // ReadLoops end at once on closed connections
	return ctx.Err()
}

// events adapts the Hub to gws.Event.
type events Hub

func sessionOf(c *gws.Conn) *Session {
	v, _ := c.Session().Load("s")
	s, _ := v.(*Session)
	return s
}

// OnOpen does nothing: open ran before the read loop started.
func (e *events) OnOpen(*gws.Conn) {}

// open registers a session whose upgrade just completed. It runs on the
// HTTP server's goroutine, not on the session's read loop: logging and
// announcing grow a goroutine's stack, and the read loop's stack is kept
// for the whole life of the connection.
func (h *Hub) open(s *Session) {
	_ = s.conn.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	h.register(s)
	s.schedulePing()
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed { // Shutdown began between the upgrade and now, and missed s
		s.Close(disconnectShutdown)
	}
	h.log.Info("session opened", "user", s.info.User, "device", s.info.Device, "remote", s.info.Remote, "session", s.info.ID)
	if h.cfg.Observer != nil {
		h.cfg.Observer.SessionOpened(s.info)
	}
}

func (e *events) OnClose(c *gws.Conn, err error) {
	h := (*Hub)(e)
	s := sessionOf(c)
	h.unregister(s) // false if a newer login replaced it: counted out then
	h.stats.closed.Add(1)
	code, reason := closeCause(s, err)
	h.log.Info("session closed", "user", s.info.User, "device", s.info.Device, "remote", s.info.Remote,
		"session", s.info.ID, "code", code, "reason", reason, "duration", time.Since(s.info.Connected).Round(time.Millisecond).String())
	if h.cfg.Observer != nil {
		h.cfg.Observer.SessionClosed(s.info)
	}
}

// closeCause says why a session ended, for the log.
func closeCause(s *Session, err error) (uint16, string) {
	if dc, ok := s.serverDisconnect(); ok {
		return dc.Code, dc.Reason
	}
	var ce *gws.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		if len(ce.Reason) > 0 {
			return ce.Code, "client closed: " + string(ce.Reason)
		}
		return ce.Code, "client closed"
	case errors.As(err, &ne) && ne.Timeout():
		return 0, "idle timeout"
	case err != nil && strings.Contains(err.Error(), "message too large"):
		return CloseTooLarge, "message too large"
	case err != nil:
		return 0, "connection lost: " + err.Error()
	}
	return 0, "connection lost"
}

func (e *events) OnPing(c *gws.Conn, payload []byte) {
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	sessionOf(c).oweWSPong(payload)
}

func (e *events) OnPong(c *gws.Conn, _ []byte) {
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
}

func (e *events) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	h := (*Hub)(e)
	h.stats.clientFrames.Add(1)
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	if m.Opcode == gws.OpcodeText && isPing(m.Bytes()) {
		sessionOf(c).owePong()
	}
	// Anything else is ignored: upstream messages come in a later version.
}

// gwsLogger bridges gws's Error(v...) logger to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("gws: " + fmt.Sprint(v...)) }

// writeError answers a plain HTTP request with {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
