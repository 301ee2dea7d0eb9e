package session

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/httpx"
	"wsmesh/internal/panics"
)

// ServeHTTP upgrades GET /ws. A bad Origin is refused with 403 and a
// malformed handshake with 400, 405 or 426 before the upgrade, and so is a
// connection beyond MaxConnections, with 503; all with a JSON body. A bad
// token is answered after the upgrade, with close code 4001.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.originAllowed(r.Header.Get("Origin")) {
		httpx.WriteError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if err := checkHandshake(w, r); err != nil {
		httpx.WriteError(w, err.status, err.msg)
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

	conn, err := h.upgrade(w, r)
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
			Session:   newSessionID(),
			User:      id.User,
			Device:    id.Device,
			Remote:    remote,
			Connected: time.Now(),
		},
	}
	if len(id.Rooms) > 0 {
		s.rooms = &roomState{allowed: id.Rooms}
	}
	conn.Session().Store("s", s)
	h.open(s, id)
	go func() {
		defer h.active.Done()
		defer h.conns.Add(-1)
		h.readLoop(s)
		s.finish()
		_ = conn.NetConn().Close() // closed already, unless the read loop panicked
	}()
}

// upgrade hijacks the connection and has gws upgrade it, with the client
// connection wrapped in a corkConn (the writer's batches go out in one
// write). A hijack that fails is answered by net/http.
func (h *Hub) upgrade(w http.ResponseWriter, r *http.Request) (*gws.Conn, error) {
	nc, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	return h.upgrader.UpgradeFromConn(&corkConn{Conn: nc}, bufio.NewReaderSize(nc, readBufferSize), r)
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
		h.log.Error("session read loop panicked: closing this connection", append(s.identity(), panics.Attrs(v)...)...)
		s.Close(disconnectInternal)
		(*events)(h).OnClose(s.conn, fmt.Errorf("panic: %v", v))
	}()
	if h.testHookRead != nil {
		h.testHookRead(s)
	}
	s.conn.ReadLoop()
}

// open registers a session whose upgrade just completed. It runs on the
// HTTP server's goroutine, not on the session's read loop: logging and
// announcing grow a goroutine's stack, and the read loop's stack is kept
// for the whole life of the connection.
//
// The welcome frame is queued before the session is registered, so it is
// the first frame the client gets, and written once the Observer has
// heard of the session, so that a client that reads its session id from
// the welcome and hands it on finds it in this node's table.
func (h *Hub) open(s *Session, id Identity) {
	_ = s.conn.SetReadDeadline(time.Now().Add(h.cfg.IdleTimeout))
	s.mu.Lock()
	s.messages++
	s.queue = append(s.queue, item{op: opMessage, data: welcomeFrame(h.cfg.NodeName, s.info, id.Expires)})
	s.mu.Unlock()
	h.register(s)
	s.startTimer(id.Expires)
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed { // Shutdown began between the upgrade and now, and missed s
		s.Close(disconnectShutdown)
	}
	h.log.Info("session opened", s.identity()...)
	if h.cfg.Observer != nil {
		h.cfg.Observer.SessionOpened(s.info)
	}
	if h.cfg.Upstream != nil {
		h.cfg.Upstream.Connected(s.info)
	}
	// Write the welcome (and whatever came after it) on this goroutine,
	// unless a message started a writer already: a fresh connection's
	// socket buffer takes it without blocking, and no goroutine is
	// started per connection for it.
	s.mu.Lock()
	inline := !s.writing && !s.finished
	if inline {
		s.writing = true
		s.writers.Add(1)
	}
	s.mu.Unlock()
	if inline {
		s.write()
	}
}

// newSessionID returns a session id: 96 random bits in 16 characters of
// URL-safe base64, unique cluster-wide without asking anyone (two ids in a
// billion collide with odds of 1 in 10^11), and the same wherever the
// session goes.
func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
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
	httpx.WriteError(w, http.StatusServiceUnavailable,
		fmt.Sprintf("node at its connection limit (%d, session.max_connections): try again later or another node", h.cfg.MaxConnections))
}

func (h *Hub) originAllowed(origin string) bool {
	if len(h.cfg.AllowedOrigins) == 0 || origin == "" {
		return true // no list, or not a browser: browsers always send Origin
	}
	return slices.ContainsFunc(h.cfg.AllowedOrigins, func(o string) bool { return strings.EqualFold(o, origin) })
}

// handshakeError is a refused WebSocket handshake: an HTTP status and why.
type handshakeError struct {
	status int
	msg    string
}

// checkHandshake checks what RFC 6455 §4.2.1 asks of an opening handshake,
// so that gws, which answers a bad one in plain text, only sees good ones.
// It may set response headers (Allow, Sec-WebSocket-Version).
func checkHandshake(w http.ResponseWriter, r *http.Request) *handshakeError {
	switch {
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		return &handshakeError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed; a WebSocket upgrade is a GET"}
	case !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return &handshakeError{http.StatusBadRequest, "websocket upgrade required (Upgrade: websocket)"}
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return &handshakeError{http.StatusBadRequest, "websocket upgrade required (Connection: Upgrade)"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return &handshakeError{http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: want 13"}
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		return &handshakeError{http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"}
	}
	return nil
}

// headerHasToken reports whether a comma-separated header lists token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
