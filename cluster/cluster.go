// Package cluster owns what a node knows of the cluster: its own identity
// (name and boot epoch) and the members with their states. Until gossip
// membership lands, a node is a cluster of one.
package cluster

import (
	"time"
)

// Member states, as GET /cluster reports them.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Member is one node as seen from this one.
type Member struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	State    string `json:"state"`
	Sessions int    `json:"sessions"`
}

// Config configures a Cluster.
type Config struct {
	NodeName  string     // required: unique in the cluster
	Advertise string     // the address other nodes reach this one at
	Sessions  func() int // this node's live session count; default: 0
}

// Cluster is this node's view of the cluster.
type Cluster struct {
	cfg   Config
	epoch int64
}

// New returns the view of a cluster of one: this node.
func New(cfg Config) *Cluster {
	if cfg.Sessions == nil {
		cfg.Sessions = func() int { return 0 }
	}
	return &Cluster{cfg: cfg, epoch: time.Now().UnixNano()}
}

// Name returns this node's name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// Epoch returns this node's boot epoch (Unix nanoseconds at start): a node
// restarted with the same name has a larger one.
func (c *Cluster) Epoch() int64 { return c.epoch }

// Members returns every member, this node first.
func (c *Cluster) Members() []Member {
	return []Member{{Name: c.cfg.NodeName, Addr: c.cfg.Advertise, State: StateAlive, Sessions: c.cfg.Sessions()}}
}

// Owners returns the nodes that hold sessions of user. In a cluster of one,
// that is this node, which answers for itself.
func (c *Cluster) Owners(user string) []string { return []string{c.cfg.NodeName} }
