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
// warnings, "node serving", "node ready", the shutdown and how long it
// took) and tells systemd when the node is ready (READY=1: once GET
// /readyz would answer 200, or after Hooks.ReadyWait, 20s, anyway) and
// when it stops. It returns the node's error, or nil after a clean
// shutdown, even one cut short.
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
	if h.Ready != nil {
		h.Ready <- n
	}
	switch end, serveErr := n.awaitReady(ctx, errc, log, h.ReadyWait); end {
	case serveEnded:
		return serveErr
	case readyOrTimedOut:
		if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
			log.Warn("could not tell systemd the node is ready", "err", err)
		}
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
	case stopped: // SIGTERM before ready: no READY=1
	}
	n.ready.stopping.Store(true)
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

// defaultReadyWait is how long Run waits for the node to be ready before
// it tells systemd READY=1 anyway: below the unit's TimeoutStartSec (30s),
// so that systemd does not kill a node whose seeds are all down (the first
// node of a cluster, or the last one standing); it serves meanwhile.
const defaultReadyWait = 20 * time.Second

// How awaitReady ended.
const (
	readyOrTimedOut = iota
	stopped         // ctx ended
	serveEnded      // Serve returned, with the error given
)

// awaitReady polls Readiness until the node is ready, logging "node ready",
// or until wait (0: defaultReadyWait) has passed, logging a warning that
// names the reasons, or until ctx ends or Serve returns (its error, from
// errc, is returned).
func (n *Node) awaitReady(ctx context.Context, errc <-chan error, log *slog.Logger, wait time.Duration) (int, error) {
	if wait <= 0 {
		wait = defaultReadyWait
	}
	start := time.Now()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ready, reasons := n.Readiness()
		if ready {
			log.Info("node ready", "took", time.Since(start).Round(time.Millisecond).String(), "members", len(n.cluster.Members()))
			return readyOrTimedOut, nil
		}
		select {
		case err := <-errc:
			return serveEnded, err
		case <-ctx.Done():
			return stopped, nil
		case <-deadline.C:
			log.Warn("node not ready in time: telling systemd it is ready anyway (GET /readyz answers 503 until it is)",
				"waited", wait.String(), "reasons", reasons)
			return readyOrTimedOut, nil
		case <-tick.C:
		}
	}
}
