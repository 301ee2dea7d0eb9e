// Package session owns the WebSocket connections of this node: the upgrade
// and its token check, one Session per user and device (a newer login here
// evicts the older; Evict carries out what the cluster settles between
// nodes), heartbeats and idle timeouts, and a bounded send queue per
// connection. It knows nothing of other nodes: it reports sessions opening
// and closing to an Observer and delivers frames it is handed.
//
// Files: hub.go (Hub, Config, Stats, Shutdown), registry.go (the sessions
// by user: register, Evict, Deliver), control.go (one session by id:
// DeliverSession; Disconnect with 4003), upgrade.go (GET /ws: origin and
// handshake checks, the connection limit, the token, the welcome frame),
// events.go (gws's callbacks, the client's rate limit, token refresh, why
// a session closed), session.go (one connection's queue and writer, its
// timer for pings and token expiry), rooms.go (rooms: join and leave,
// Publish, Broadcast), frames.go (close codes and frames), auth.go
// (tokens), limits.go (the default connection limit).
package session

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/realip"
	"wsmesh/internal/throttle"
)

// Config configures a Hub. Zero values take the defaults named.
type Config struct {
	PingInterval       time.Duration  // default 25s
	IdleTimeout        time.Duration  // default 60s: close a connection silent this long
	WriteTimeout       time.Duration  // default 10s: give up a write to a stuck client
	SendQueue          int            // default 256 messages per connection
	MaxMessageBytes    int            // default 65536: larger client frames close with 1009
	MaxConnections     int            // default: FileLimitConnections(); more WebSockets get 503
	MaxClientRate      float64        // frames per second a client may send (burst twice that); over it: close 4008. 0: no limit
	Compression        bool           // permessage-deflate (RFC 7692) with clients that ask for it, no context takeover, frames of 512 bytes or more
	MaxRoomsPerSession int            // default 100: rooms one session may be in at once
	NodeName           string         // this node's name, for the welcome frame
	SingleDevice       bool           // one session per user, not per user and device
	AllowedOrigins     []string       // default: any Origin
	TrustedProxies     realip.Proxies // whose X-Forwarded-For names the client in logs; default none
	Auth               *Authenticator
	Observer           Observer      // default: none
	Upstream           Upstream      // client messages and session lifecycle for the backend; nil: messages answered with an error frame
	Clock              func() uint64 // stamps logins, strictly increasing; called with a registry lock held (LOCKS.md); default: a local counter
	Logger             *slog.Logger  // default: slog.Default()
}

// Observer hears of sessions opening and closing, and of this node's
// member counts of rooms changing. SessionOpened and SessionClosed come
// from the sessions' goroutines, with no hub lock held, and must not
// block.
//
// RoomChanged(room, members) says that this node now has members
// sessions in room (0: none left here). It is called with the hub's lock
// for that room held, so that the calls for one room arrive in the order
// of the changes; calls for different rooms may come concurrently. It must
// not block and must not call back into the hub (LOCKS.md: the room lock
// comes before whatever it takes).
type Observer interface {
	SessionOpened(Info)
	SessionClosed(Info)
	RoomChanged(room string, members int)
}

// Upstream hears what clients send and how their sessions begin and end,
// for the backend (package upstream). Calls for one session come in the
// order things happened to it: Connected first, from the upgrade, then
// its messages and Disconnected, from its read loop. They must not block.
type Upstream interface {
	Connected(Info)
	// Message is a client's {"type":"message"} frame: id is the client's
	// own id for it ("" if none), data its "data", compact JSON. A non-nil
	// error is answered with an error frame whose reason is its text; the
	// session stays.
	Message(i Info, id string, data []byte) error
	// Disconnected: the session ended with code (1006 when no close
	// frame was exchanged) and reason.
	Disconnected(i Info, code uint16, reason string)
}

// Hub holds this node's sessions. It is an http.Handler for GET /ws.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	upgrader *gws.Upgrader
	seed     maphash.Seed
	shards   [64]shard
	rooms    [64]roomShard // the rooms index: room -> members here (rooms.go)
	count    atomic.Int64  // registered sessions
	conns    atomic.Int64  // admitted connections, from the upgrade until their goroutines end
	stats    hubStats
	full     throttle.Every // the "connection limit reached" warning

	testHookRead func(*Session) // runs on the read loop goroutine before ReadLoop; tests only

	mu     sync.Mutex // guards closed and the Add side of active; a leaf lock
	closed bool
	active sync.WaitGroup // one per upgraded connection, until its goroutines end
}

// readBufferSize is the read buffer of a client connection: clients send
// little (pings and small frames); gws's default would take 4 KiB of the
// 13 an idle connection costs.
const readBufferSize = 1024

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
	if cfg.MaxRoomsPerSession <= 0 {
		cfg.MaxRoomsPerSession = 100
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
	for i := range h.rooms {
		h.rooms[i].rooms = map[string]*roomMembers{}
	}
	h.upgrader = gws.NewUpgrader((*events)(h), &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxMessageBytes,
		ReadBufferSize:     readBufferSize,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{h.log},
		PermessageDeflate: gws.PermessageDeflate{
			Enabled: cfg.Compression,
			// No context takeover: each message is compressed on its own
			// with a compressor from a pool, so an idle connection holds
			// no deflate state (a takeover window costs ~300 KiB per
			// connection). Frames under 512 bytes go uncompressed: the
			// saving would not pay for the CPU.
			ServerContextTakeover: false,
			ClientContextTakeover: false,
			Threshold:             512,
			Level:                 1, // flate.BestSpeed
		},
	})
	return h, nil
}

// hubStats are the hub's running totals.
type hubStats struct {
	upgrades, authFailures, evictions, slowConsumers, closed, refused, clientFrames atomic.Uint64
	expired, refreshes, refreshesRefused, kicked, tooMany                           atomic.Uint64
	messages, messagesRefused                                                       atomic.Uint64
}

// Stats are running totals since the hub started, for metrics.
type Stats struct {
	Upgrades        uint64 // WebSocket upgrades completed, refused tokens included
	AuthFailures    uint64 // upgrades closed with 4001
	Evictions       uint64 // sessions closed with 4000 (newer login here or elsewhere)
	SlowConsumers   uint64 // sessions closed with 4002 (send queue overflowed)
	Closed          uint64 // sessions ended, for any reason
	Refused         uint64 // upgrades refused with 503: MaxConnections reached
	ClientFrames    uint64 // frames read from clients: messages, pings and pongs
	Expired         uint64 // sessions closed with 4001 "token expired"
	Refreshes       uint64 // in-band token refreshes taken
	RefreshFailed   uint64 // in-band token refreshes refused (an error frame)
	Kicked          uint64 // sessions closed with 4003 (Disconnect)
	TooMany         uint64 // sessions closed with 4008 (over MaxClientRate)
	Messages        uint64 // client messages handed to the Upstream
	MessagesRefused uint64 // client messages answered with an error frame (bad data, no backend, queue full)
}

// Stats returns the running totals.
func (h *Hub) Stats() Stats {
	return Stats{
		Upgrades:        h.stats.upgrades.Load(),
		AuthFailures:    h.stats.authFailures.Load(),
		Evictions:       h.stats.evictions.Load(),
		SlowConsumers:   h.stats.slowConsumers.Load(),
		Closed:          h.stats.closed.Load(),
		Refused:         h.stats.refused.Load(),
		ClientFrames:    h.stats.clientFrames.Load(),
		Expired:         h.stats.expired.Load(),
		Refreshes:       h.stats.refreshes.Load(),
		RefreshFailed:   h.stats.refreshesRefused.Load(),
		Kicked:          h.stats.kicked.Load(),
		TooMany:         h.stats.tooMany.Load(),
		Messages:        h.stats.messages.Load(),
		MessagesRefused: h.stats.messagesRefused.Load(),
	}
}

// MaxConnections returns the most WebSockets the hub holds at once.
func (h *Hub) MaxConnections() int { return h.cfg.MaxConnections }

// Shutdown refuses new sessions, closes every session with 1012 after what
// is queued for it, and waits for their goroutines. If ctx ends first it
// cuts the remaining connections and returns ctx.Err(). Safe to call twice.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()

	all := h.allSessions()
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
