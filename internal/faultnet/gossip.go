package faultnet

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// FastGossip makes failure detection quick enough for tests: a probe every
// 200ms, suspicion confirmed within about a second, a full state sync
// every second. It suits cluster.Config.Tune.
func FastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = time.Second
	c.DeadNodeReclaimTime = time.Second
}
