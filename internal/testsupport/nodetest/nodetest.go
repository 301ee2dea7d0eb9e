// Package nodetest runs wsmesh nodes in this process for tests: one
// (Start) or a cluster of them (StartCluster), on loopback ports the
// kernel picks, with fast settings, logging to the test's log, and shut
// down as SIGTERM would when the test ends. Only tests import it.
package nodetest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/node"
	"wsmesh/internal/testsupport"
)

// Config is a fast single-node config on 127.0.0.1:0, named t1, with the
// test credentials (testsupport.Secret, testsupport.APIKey) and debug logs.
func Config(tb testing.TB) *config.Config {
	tb.Helper()
	c := config.Default()
	c.Node.Name = "t1"
	c.HTTP.Listen = "127.0.0.1:0"
	c.Cluster.Bind = "127.0.0.1:0"
	c.Auth.JWTSecret = testsupport.Secret
	c.Auth.APIKeys = []string{testsupport.APIKey}
	c.Node.ShutdownTimeout = config.Duration(5 * time.Second)
	c.Log.Level = "debug"
	return &c
}

// Node is a node running in this process (node.Run), with a client of its
// API and WebSocket.
type Node struct {
	*node.Node
	*testsupport.Client
	Cfg  *config.Config
	Logs *testsupport.LogWriter // the node's log lines, also in the test's log

	cancel context.CancelFunc
	done   chan error // receives Run's result once
	once   sync.Once
}

// Addr returns the node's HTTP address.
func (n *Node) Addr() string { return n.Node.Addr() }

// Start runs a node with cfg and stops it when the test ends. Its log
// lines, at cfg.Log.Level, go to tb.Logf.
func Start(tb testing.TB, cfg *config.Config) *Node {
	tb.Helper()
	return StartHooks(tb, cfg, node.Hooks{})
}

// StartHooks is Start with test hooks; it sets h.Ready itself.
func StartHooks(tb testing.TB, cfg *config.Config, h node.Hooks) *Node {
	tb.Helper()
	lw := testsupport.NewLogWriter(tb)
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: level})).With("node", cfg.Node.Name)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *node.Node, 1)
	h.Ready = ready
	n := &Node{Cfg: cfg, Logs: lw, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- node.Run(ctx, cfg, log, h) }()
	select {
	case n.Node = <-ready:
	case err := <-n.done:
		cancel()
		tb.Fatalf("node did not start: %v", err)
	}
	n.Client = testsupport.NewClient(n.Node.Addr(), cfg.Auth.JWTSecret, testsupport.APIKey)
	tb.Cleanup(func() { n.Stop(tb) })
	return n
}

// BeginStop starts the node's shutdown, as SIGTERM would, and returns at
// once; Stop waits for it.
func (n *Node) BeginStop() { n.cancel() }

// Stop shuts the node down (as SIGTERM would) and waits for Run to return.
// Safe to call twice.
func (n *Node) Stop(tb testing.TB) {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				tb.Errorf("node: %v", err)
			}
		case <-time.After(testsupport.WaitLimit):
			tb.Fatalf("node did not stop within %s", testsupport.WaitLimit)
		}
	})
}
