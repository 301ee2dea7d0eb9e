package node

import (
	"context"
	"log/slog"
	"time"

	"wsmesh/config"
	"wsmesh/internal/sdnotify"
)

// Run runs a node until ctx ends, then shuts it down within
// node.shutdown_timeout. It logs what the operator needs (configuration
// warnings, "node serving", the shutdown and how long it took) and tells
// systemd when the node is ready and when it stops. It returns the node's
// error, or nil after a clean shutdown, even one cut short.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, h Hooks) error {
	n, err := New(cfg, log, h)
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
		"max_connections", n.hub.MaxConnections(), "config", cfg.Source, "version", Version())

	errc := make(chan error, 1)
	go func() { errc <- n.Serve() }()
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("could not tell systemd the node is ready", "err", err)
	}
	if h.Ready != nil {
		h.Ready <- n
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
	if err := n.Shutdown(sctx); err != nil {
		log.Warn("shutdown cut short", "err", err, "took", time.Since(start).Round(time.Millisecond).String())
	} else {
		log.Info("shutdown complete", "took", time.Since(start).Round(time.Millisecond).String())
	}
	return <-errc
}
