// Command wsmesh runs a node of a WebSocket gateway cluster: clients hold a
// WebSocket to any node, and POST /send on any node reaches them.
//
//	wsmesh [serve] [-config FILE]
//	wsmesh token -user ID [-device NAME] [-ttl 1h] [-config FILE]
//	wsmesh version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/lmittmann/tint"

	"wsmesh/cluster"
	"wsmesh/config"
	"wsmesh/internal/metrics"
	"wsmesh/internal/realip"
	"wsmesh/internal/sdnotify"
	"wsmesh/loadgen"
	"wsmesh/relay"
	"wsmesh/session"
	"wsmesh/web"
)

const usage = `wsmesh: a broker-less WebSocket gateway cluster.

Usage:
  wsmesh [serve] [-config FILE]     run a node (the default command)
  wsmesh token -user ID [-device NAME] [-ttl 1h] [-config FILE]
                                    print a client token signed with the config's jwt_secret
  wsmesh version                    print the version and VCS revision
  wsmesh bench [flags]              load-test nodes: clients, POST /send, latency (bench -h)

With no -config, ./config.toml is read if present, else built-in defaults
(one node on 127.0.0.1:8080). Any key can be overridden by an environment
variable WSMESH_<SECTION>_<KEY>, e.g. WSMESH_HTTP_LISTEN=127.0.0.1:9000.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(args, stdout, stderr)
	case "token":
		return cmdToken(args, stdout, stderr)
	case "bench":
		return loadgen.Main(args, stdout, stderr)
	case "version":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "wsmesh version: unexpected argument %q\n\n%s", args[0], usage)
			return 2
		}
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wsmesh: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// parseFlags parses a subcommand's flags: -h prints usage to stdout (exit
// 0); a bad flag or a stray argument prints it to stderr (exit 2).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (exit int, ok bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return 0, false
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh %s: %v\n\n%s", fs.Name(), err, usage)
		return 2, false
	}
	return 0, true
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (default ./config.toml if present)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh: %v\n", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log, hooks{}); err != nil {
		log.Error("node failed", "err", err)
		return 1
	}
	return 0
}

// hooks let tests watch and bend a node; the zero value is production.
type hooks struct {
	ready  chan<- *node                                                      // receives the node once it serves
	tune   func(*memberlist.Config)                                          // adjusts gossip timings
	wrap   func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport // fault injection
	rejoin time.Duration                                                     // how often to re-join seeds and lost members (0: the default, 30s)
}

// serve runs a node until ctx ends, then shuts it down within
// node.shutdown_timeout.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, h hooks) error {
	n, err := newNode(cfg, log, h)
	if err != nil {
		return err
	}
	if cfg.GeneratedSecret {
		log.Warn("no jwt_secret configured: generated a random one for this run; tokens from `wsmesh token` will not verify here, and other nodes refuse this node's link messages (nodes must share it). Use a config file (-config) or WSMESH_AUTH_JWT_SECRET",
			"config", cfg.Source)
	}
	if len(cfg.Auth.APIKeys) == 0 {
		log.Warn("no api_keys configured: POST /send and GET /cluster are open to anyone who reaches " + n.Addr())
	}
	log.Info("node serving", "node", cfg.Node.Name, "http", n.Addr(), "websocket", "ws://"+n.Addr()+"/ws",
		"max_connections", n.hub.MaxConnections(), "config", cfg.Source, "version", versionString())

	errc := make(chan error, 1)
	go func() { errc <- n.serve() }()
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("could not tell systemd the node is ready", "err", err)
	}
	if h.ready != nil {
		h.ready <- n
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: answering in-flight requests, then closing sessions with 1012",
		"sessions", n.hub.Len(), "in_flight_requests", n.inFlight.Load(), "timeout", cfg.Node.ShutdownTimeout.D().String())
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Node.ShutdownTimeout.D())
	defer cancel()
	if err := n.shutdown(sctx); err != nil {
		log.Warn("shutdown cut short", "err", err, "took", time.Since(start).Round(time.Millisecond).String())
	} else {
		log.Info("shutdown complete", "took", time.Since(start).Round(time.Millisecond).String())
	}
	return <-errc
}

// node is one running wsmesh node: the session hub, the cluster view and the
// HTTP API, wired together.
type node struct {
	cfg      *config.Config
	hub      *session.Hub
	cluster  *cluster.Cluster
	api      *relay.Server
	srv      *http.Server
	ln       net.Listener
	inFlight atomic.Int64 // HTTP requests being handled (not WebSockets once upgraded)
	admin    *http.Server // the profiler on admin.listen, or nil
	adminLn  net.Listener
}

func newNode(cfg *config.Config, log *slog.Logger, h hooks) (*node, error) {
	auth, err := session.NewAuthenticator([]byte(cfg.Auth.JWTSecret))
	if err != nil {
		return nil, err
	}
	proxies, err := realip.Parse(cfg.HTTP.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("http.trusted_proxies: %w", err)
	}
	m := metrics.New()
	cl, err := cluster.New(cluster.Config{
		NodeName:       cfg.Node.Name,
		Bind:           cfg.Cluster.Bind,
		Advertise:      cfg.Cluster.Advertise,
		Seeds:          cfg.Cluster.Seeds,
		SecretKeys:     cfg.Cluster.SecretKeys,
		LinkKey:        cluster.DeriveLinkKey([]byte(cfg.Auth.JWTSecret)),
		SingleDevice:   cfg.Session.SingleDevice,
		OnBatch:        m.OnBatch,
		Logger:         log,
		Tune:           h.tune,
		WrapTransport:  h.wrap,
		RejoinInterval: h.rejoin,
	})
	if err != nil {
		return nil, err
	}
	hub, err := session.New(session.Config{
		PingInterval:    cfg.Session.PingInterval.D(),
		IdleTimeout:     cfg.Session.IdleTimeout.D(),
		WriteTimeout:    cfg.Session.WriteTimeout.D(),
		SendQueue:       cfg.Session.SendQueue,
		MaxMessageBytes: cfg.Session.MaxMessageBytes,
		MaxConnections:  cfg.Session.MaxConnections,
		SingleDevice:    cfg.Session.SingleDevice,
		AllowedOrigins:  cfg.Auth.AllowedOrigins,
		TrustedProxies:  proxies,
		Auth:            auth,
		Observer:        relay.Announcer{Cluster: cl},
		Clock:           cl.Now,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	var routes map[string]http.Handler
	if cfg.HTTP.DemoEnabled() {
		demo := web.Demo() // /demo/ and /demo/wsmesh.js; /demo redirects there
		routes = map[string]http.Handler{"GET /demo": demo, "GET /demo/": demo}
	}
	api, err := relay.New(relay.Config{
		Routes:          routes,
		Hub:             hub,
		Cluster:         cl,
		APIKeys:         cfg.Auth.APIKeys,
		MaxBodyBytes:    cfg.HTTP.MaxBodyBytes,
		MaxUsersPerSend: cfg.HTTP.MaxUsersPerSend,
		TrustedProxies:  proxies,
		Metrics:         m.Handler(),
		OnForward:       m.OnForward,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	m.Register(metrics.Sources{Hub: hub, Cluster: cl, API: api})
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	if err := cl.Start(api); err != nil {
		ln.Close()
		return nil, err
	}
	n := &node{cfg: cfg, hub: hub, cluster: cl, api: api, ln: ln}
	n.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.inFlight.Add(1)
			defer n.inFlight.Add(-1)
			api.ServeHTTP(w, r)
		}),
		// Headers and body must arrive within read_timeout (headers within
		// 10 s of it), so a stalled request cannot hold a connection and its
		// file. gws clears these deadlines once a WebSocket is upgraded; the
		// session's idle timeout governs it from then on.
		ReadHeaderTimeout: min(10*time.Second, cfg.HTTP.ReadTimeout.D()),
		ReadTimeout:       cfg.HTTP.ReadTimeout.D(),
		IdleTimeout:       120 * time.Second,
		ErrorLog:          stdlog.New(&serverLog{log: log}, "", 0),
	}
	if cfg.Admin.Listen != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close()
			_ = cl.Leave(context.Background())
			return nil, fmt.Errorf("listen on admin.listen %s: %w", cfg.Admin.Listen, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		n.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("profiler serving", "admin", "http://"+n.adminLn.Addr().String()+"/debug/pprof/")
	}
	return n, nil
}

// Addr returns the HTTP listener's address.
func (n *node) Addr() string { return n.ln.Addr().String() }

// serve blocks until shutdown; nil after a clean shutdown.
func (n *node) serve() error {
	if n.admin != nil {
		go func() { _ = n.admin.Serve(n.adminLn) }() // ended by shutdown's Close
	}
	if err := n.srv.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// shutdown stops accepting, lets in-flight requests answer (those whose
// body has not arrived within a second get 503), closes every session with 1012,
// then leaves the cluster (peers see "left" at once).
//
// http.Server.Shutdown also waits for idle connections that never sent a
// request (a browser's spare socket) for up to 5 s: that must not hold the
// 1012 back. So sessions close once the in-flight requests are done, and the
// connections still idle then are cut.
func (n *node) shutdown(ctx context.Context) error {
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
	_ = n.srv.Close() // in-flight requests are answered: what is left is idle
	httpErr := <-httpDone
	if errors.Is(httpErr, http.ErrServerClosed) {
		httpErr = nil
	}
	if n.admin != nil {
		_ = n.admin.Close()
	}
	return errors.Join(httpErr, hubErr, n.cluster.Leave(ctx))
}

// newLogger builds the process logger: tint on a terminal, JSON otherwise.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	format := c.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "tint"
			}
		}
	}
	switch format {
	case "tint":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (default ./config.toml if present)")
	user := fs.String("user", "", "user id (the token's sub claim; required)")
	device := fs.String("device", "", `device name (default "default")`)
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *user == "" {
		fmt.Fprintf(stderr, "wsmesh token: -user is required\n\n%s", usage)
		return 2
	}
	cfg, err := config.Load(*cfgPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh: %v\n", err)
		return 1
	}
	if cfg.GeneratedSecret {
		fmt.Fprintf(stderr, "wsmesh token: no auth.jwt_secret configured (config: %s, WSMESH_AUTH_JWT_SECRET unset): a token would not verify on any node; pass -config FILE\n", cfg.Source)
		return 1
	}
	auth, err := session.NewAuthenticator([]byte(cfg.Auth.JWTSecret))
	if err == nil {
		var tok string
		if tok, err = auth.Mint(*user, *device, *ttl); err == nil {
			fmt.Fprintln(stdout, tok)
			return 0
		}
	}
	fmt.Fprintf(stderr, "wsmesh token: %v\n", err)
	return 1
}

// versionString reports the module version and VCS revision from the build.
func versionString() string {
	version, rev, modified := "(devel)", "unknown revision", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
	}
	return fmt.Sprintf("wsmesh %s %s%s %s", version, rev, modified, runtime.Version())
}
