package nodetest

import (
	"fmt"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/config"
	"wsmesh/internal/faultnet"
	"wsmesh/internal/node"
	"wsmesh/internal/testsupport/clustertest"
)

// Setup is what a StartCluster option may change for node i before it
// starts.
type Setup struct {
	Cfg   *config.Config
	Hooks node.Hooks
}

// StartCluster starts n nodes (t1..tn) that join the first one, with fast
// gossip (faultnet.FastGossip) and re-joins every 500ms, and waits until
// every node sees every other alive. Each option runs for each node.
func StartCluster(tb testing.TB, n int, opts ...func(i int, s *Setup)) []*Node {
	tb.Helper()
	var nodes []*Node
	for i := range n {
		cfg := Config(tb)
		cfg.Node.Name = fmt.Sprintf("t%d", i+1)
		if i > 0 {
			cfg.Cluster.Seeds = []string{nodes[0].Cluster().Addr()}
		}
		s := &Setup{Cfg: cfg, Hooks: node.Hooks{Tune: faultnet.FastGossip, RejoinInterval: 500 * time.Millisecond}}
		for _, o := range opts {
			o(i, s)
		}
		nodes = append(nodes, StartHooks(tb, cfg, s.Hooks))
	}
	WaitConverged(tb, nodes)
	return nodes
}

// FaultNet is a StartCluster option that sends node i's gossip through fn
// (node names t1..tn).
func FaultNet(fn *faultnet.Net) func(i int, s *Setup) {
	return func(i int, s *Setup) { s.Hooks.WrapTransport = fn.Wrap(fmt.Sprintf("t%d", i+1)) }
}

// WaitConverged waits until every node lists every node alive, and
// returns how long that took.
func WaitConverged(tb testing.TB, nodes []*Node) time.Duration {
	tb.Helper()
	return clustertest.WaitConverged(tb, Clusters(nodes))
}

// WaitRoutable waits until every node's table knows user's session on owner.
func WaitRoutable(tb testing.TB, nodes []*Node, user, owner string) {
	tb.Helper()
	clustertest.WaitRoutable(tb, Clusters(nodes), user, owner)
}

// Clusters returns each node's view of the cluster.
func Clusters(nodes []*Node) []*cluster.Cluster {
	out := make([]*cluster.Cluster, len(nodes))
	for i, n := range nodes {
		out[i] = n.Cluster()
	}
	return out
}
