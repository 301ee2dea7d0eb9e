// Package node wires one wsmesh node together: the session hub, the
// cluster view, the HTTP API and the profiler, on the listeners the config
// names. It owns their start and their shutdown order; main only loads the
// config, builds the logger, handles signals and calls Run.
package node

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/cluster"
	"wsmesh/config"
	"wsmesh/internal/metrics"
	"wsmesh/internal/realip"
	"wsmesh/relay"
	"wsmesh/session"
	"wsmesh/upstream"
	"wsmesh/web"
)

// Hooks let tests watch and bend a node; the zero value is production.
type Hooks struct {
	// Ready, if set, receives the node once it serves (Run only).
	Ready chan<- *Node
	// Tune adjusts memberlist's timings (cluster.Config.Tune).
	Tune func(*memberlist.Config)
	// WrapTransport wraps memberlist's transport, for fault injection
	// (cluster.Config.WrapTransport).
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// RejoinInterval is how often to re-join seeds and lost members
	// (0: the cluster's default, 30s).
	RejoinInterval time.Duration
	// ReadyWait bounds how long Run waits for the node to be ready
	// (Readiness) before it tells systemd READY=1 anyway (0: 20s).
	ReadyWait time.Duration
}

// Node is one running wsmesh node: the session hub, the cluster view and
// the HTTP API, wired together.
type Node struct {
	cfg      *config.Config
	hub      *session.Hub
	cluster  *cluster.Cluster
	api      *relay.Server
	srv      *http.Server
	ln       net.Listener
	inFlight atomic.Int64 // HTTP requests being handled (not WebSockets once upgraded)
	admin    *profiler    // on admin.listen, or nil
	ready    *readiness
	upstream *upstream.Sender // client messages and session events to the backend, or nil (upstream.url unset)
}

// readiness is what GET /readyz answers: the cluster's readiness
// (cluster.Readiness), and never once shutdown has begun.
type readiness struct {
	cluster  *cluster.Cluster
	stopping atomic.Bool
}

func (r *readiness) check() (bool, []string) {
	if r.stopping.Load() {
		return false, []string{"shutting down"}
	}
	return r.cluster.Readiness()
}

// New builds a node from cfg: it binds http.listen (and admin.listen, if
// set) and joins the cluster, but serves no HTTP until Serve. On error
// nothing is left bound or joined.
func New(cfg *config.Config, log *slog.Logger, h Hooks) (*Node, error) {
	auth, err := session.NewAuthenticator([]byte(cfg.Auth.JWTSecret))
	if err != nil {
		return nil, err
	}
	proxies, err := realip.Parse(cfg.HTTP.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("http.trusted_proxies: %w", err)
	}
	m := metrics.New()
	var hub *session.Hub // set below; the upstream sender answers clients through it
	up, err := newUpstream(cfg, log, m, func(user, sess string, frame []byte) { hub.DeliverSession(user, sess, frame) })
	if err != nil {
		return nil, err
	}
	cl, err := newCluster(cfg, log, h, m, up)
	if err != nil {
		return nil, err
	}
	if hub, err = newHub(cfg, log, auth, proxies, cl, up); err != nil {
		return nil, err
	}
	ready := &readiness{cluster: cl}
	api, err := newAPI(cfg, log, hub, cl, proxies, m, ready.check)
	if err != nil {
		return nil, err
	}
	version, revision := build()
	m.Register(metrics.Sources{Hub: hub, Cluster: cl, API: api, Upstream: up, Ready: ready.check, Version: version, Revision: revision})
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	if err := cl.Start(api); err != nil {
		ln.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, hub: hub, cluster: cl, api: api, ln: ln, ready: ready, upstream: up}
	if up != nil {
		up.Start()
	}
	n.srv = n.newServer(log)
	if cfg.Admin.Listen != "" {
		if n.admin, err = listenProfiler(cfg.Admin.Listen, log); err != nil {
			ln.Close()
			_ = cl.Leave(context.Background())
			return nil, err
		}
	}
	return n, nil
}

// newUpstream builds the sender of events to the backend from the
// [upstream] table; nil if upstream.url is not set.
func newUpstream(cfg *config.Config, log *slog.Logger, m *metrics.Metrics, deliver func(user, session string, frame []byte)) (*upstream.Sender, error) {
	u := cfg.Upstream
	if u.URL == "" {
		return nil, nil
	}
	s, err := upstream.New(upstream.Config{
		URL: u.URL, Secret: []byte(u.Secret), Events: u.Events, Timeout: u.Timeout.D(), RetryFor: u.RetryFor.D(),
		MaxBatch: u.MaxBatch, Queue: u.Queue, Node: cfg.Node.Name, Deliver: deliver, OnPost: m.OnUpstreamPost, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return s, nil
}

// newCluster builds the cluster view from the [cluster] table; its batch
// timings feed m; a failed member's sessions go to up, if this node is
// the one to report them.
func newCluster(cfg *config.Config, log *slog.Logger, h Hooks, m *metrics.Metrics, up *upstream.Sender) (*cluster.Cluster, error) {
	var onFailed func(string, []cluster.Located)
	if up != nil {
		onFailed = func(node string, sessions []cluster.Located) {
			gone := make([]upstream.Gone, len(sessions))
			for i, l := range sessions {
				gone[i] = upstream.Gone{User: l.User, Device: l.Device, Session: l.Session, Connected: l.Connected}
			}
			up.NodeFailed(node, gone)
		}
	}
	return cluster.New(cluster.Config{
		OnNodeFailed:   onFailed,
		NodeName:       cfg.Node.Name,
		Bind:           cfg.Cluster.Bind,
		Advertise:      cfg.Cluster.Advertise,
		Seeds:          cfg.Cluster.Seeds,
		SecretKeys:     cfg.Cluster.SecretKeys,
		LinkKey:        cluster.DeriveLinkKey([]byte(cfg.Auth.JWTSecret)),
		SingleDevice:   cfg.Session.SingleDevice,
		OnBatch:        m.OnBatch,
		Logger:         log,
		Tune:           h.Tune,
		WrapTransport:  h.WrapTransport,
		RejoinInterval: h.RejoinInterval,
	})
}

// newHub builds the session hub from the [session] table; it reports its
// sessions to cl.
func newHub(cfg *config.Config, log *slog.Logger, auth *session.Authenticator, proxies realip.Proxies, cl *cluster.Cluster, up *upstream.Sender) (*session.Hub, error) {
	var upc session.Upstream
	if up != nil {
		upc = up
	}
	return session.New(session.Config{
		Upstream:           upc,
		PingInterval:       cfg.Session.PingInterval.D(),
		IdleTimeout:        cfg.Session.IdleTimeout.D(),
		WriteTimeout:       cfg.Session.WriteTimeout.D(),
		SendQueue:          cfg.Session.SendQueue,
		MaxMessageBytes:    cfg.Session.MaxMessageBytes,
		MaxConnections:     cfg.Session.MaxConnections,
		MaxClientRate:      float64(cfg.Session.MaxClientRate),
		Compression:        cfg.Session.Compression,
		MaxRoomsPerSession: cfg.Rooms.MaxPerSession,
		NodeName:           cfg.Node.Name,
		SingleDevice:       cfg.Session.SingleDevice,
		AllowedOrigins:     cfg.Auth.AllowedOrigins,
		TrustedProxies:     proxies,
		Auth:               auth,
		Observer:           relay.Announcer{Cluster: cl},
		Clock:              cl.Now,
		Logger:             log,
	})
}

// newAPI builds the HTTP API from the [http] table, with the demo page if
// enabled; GET /readyz answers ready.
func newAPI(cfg *config.Config, log *slog.Logger, hub *session.Hub, cl *cluster.Cluster, proxies realip.Proxies, m *metrics.Metrics, ready func() (bool, []string)) (*relay.Server, error) {
	var routes map[string]http.Handler
	if cfg.HTTP.DemoEnabled() {
		demo := web.Demo() // /demo/ and /demo/wsmesh.js; /demo redirects there
		routes = map[string]http.Handler{
			"GET /demo":  demo,
			"GET /demo/": demo,
			"GET /{$}":   http.RedirectHandler("/demo/", http.StatusFound), // a newcomer opening the node's address finds the demo
		}
	}
	return relay.New(relay.Config{
		Routes:          routes,
		Hub:             hub,
		Cluster:         cl,
		APIKeys:         cfg.Auth.APIKeys,
		MaxBodyBytes:    cfg.HTTP.MaxBodyBytes,
		MaxUsersPerSend: cfg.HTTP.MaxUsersPerSend,
		TrustedProxies:  proxies,
		Metrics:         m.Handler(),
		OnForward:       m.OnForward,
		Readiness:       ready,
		Logger:          log,
	})
}

// newServer returns the HTTP server of the API, counting requests in flight.
func (n *Node) newServer(log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.inFlight.Add(1)
			defer n.inFlight.Add(-1)
			n.api.ServeHTTP(w, r)
		}),
		// Headers and body must arrive within read_timeout (headers within
		// 10 s of it), so a stalled request cannot hold a connection and its
		// file. gws clears these deadlines once a WebSocket is upgraded; the
		// session's idle timeout governs it from then on.
		ReadHeaderTimeout: min(10*time.Second, n.cfg.HTTP.ReadTimeout.D()),
		ReadTimeout:       n.cfg.HTTP.ReadTimeout.D(),
		IdleTimeout:       120 * time.Second,
		ErrorLog:          stdlog.New(&serverLog{log: log}, "", 0),
	}
}

// Addr returns the HTTP listener's address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// AdminAddr returns the profiler's address, or "" if admin.listen is unset.
func (n *Node) AdminAddr() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.ln.Addr().String()
}

// Hub returns the node's session hub.
func (n *Node) Hub() *session.Hub { return n.hub }

// Cluster returns the node's view of the cluster.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Readiness is what GET /readyz answers: ready once the node has joined
// and holds every alive member's sessions (cluster.Readiness), not ready
// from the moment Shutdown begins ("shutting down"). It does not block.
func (n *Node) Readiness() (ready bool, reasons []string) { return n.ready.check() }

// InFlight returns the number of HTTP requests being handled (WebSockets
// count only until they are upgraded).
func (n *Node) InFlight() int64 { return n.inFlight.Load() }

// Serve serves HTTP (and the profiler) until Shutdown; nil after a clean
// shutdown. Call it once.
func (n *Node) Serve() error {
	if n.admin != nil {
		go n.admin.serve() // ended by Shutdown's close
	}
	if err := n.srv.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// Shutdown marks the node not ready (GET /readyz: 503 "shutting down"),
// stops accepting, lets in-flight requests answer (those whose body has not
// arrived within a second get 503), closes every session with 1012, then
// leaves the cluster (peers see "left" at once). It returns ctx.Err() if
// ctx ends first.
//
// http.Server.Shutdown also waits for idle connections that never sent a
// request (a browser's spare socket) for up to 5 s: that must not hold the
// 1012 back. So sessions close once the in-flight requests are done, and the
// connections still idle then are cut.
func (n *Node) Shutdown(ctx context.Context) error {
	n.ready.stopping.Store(true) // GET /readyz: 503 "shutting down" from now on
	// Bodies still arriving get a moment to finish, then 503: a stalled one
	// must not hold shutdown for its whole timeout.
	n.api.CutBodyReads(min(time.Second, n.cfg.Node.ShutdownTimeout.D()/4))
	httpDone := make(chan error, 1)
	go func() { httpDone <- n.srv.Shutdown(ctx) }()
	tick := time.NewTicker(2 * time.Millisecond)
	for n.inFlight.Load() > 0 && ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	hubErr := n.hub.Shutdown(ctx)
	var upErr error
	if n.upstream != nil { // after the hub: its sessions' disconnect events go out too
		upErr = n.upstream.Close(ctx)
	}
	_ = n.srv.Close() // in-flight requests are answered: what is left is idle
	httpErr := <-httpDone
	if errors.Is(httpErr, http.ErrServerClosed) {
		httpErr = nil
	}
	if n.admin != nil {
		n.admin.close()
	}
	return errors.Join(httpErr, hubErr, upErr, n.cluster.Leave(ctx))
}
