// Package clustertest waits for what tests expect of a cluster's
// membership and session table, seen from each of its nodes
// (cluster.Cluster), whether the nodes run alone (cluster's tests) or
// inside whole nodes (nodetest). Only tests import it.
package clustertest

import (
	"slices"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/testsupport"
)

// WaitConverged waits until every node lists every node alive, and returns
// how long that took.
func WaitConverged(tb testing.TB, nodes []*cluster.Cluster) time.Duration {
	tb.Helper()
	return testsupport.PollUntil(tb, "every node to see every node alive", testsupport.WaitLimit, func() bool {
		for _, a := range nodes {
			alive := 0
			for _, m := range a.Members() {
				if m.State == cluster.StateAlive {
					alive++
				}
			}
			if alive != len(nodes) {
				return false
			}
		}
		return true
	})
}

// WaitRoutable waits until every node's table knows user's session on owner.
func WaitRoutable(tb testing.TB, nodes []*cluster.Cluster, user, owner string) {
	tb.Helper()
	testsupport.WaitFor(tb, user+" routable everywhere", func() bool {
		for _, n := range nodes {
			if !slices.Contains(n.Owners(user), owner) {
				return false
			}
		}
		return true
	})
}

// StateOf returns the state in which c lists member name, "" if it does
// not list it.
func StateOf(c *cluster.Cluster, name string) string {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}
