// Package cluster owns what a node knows of the cluster: membership by
// gossip (hashicorp/memberlist), this node's identity (name and boot
// epoch), the cluster-wide session table, and ordered, acknowledged,
// authenticated messaging between nodes. It knows nothing of WebSockets
// or HTTP: local sessions come in through AddLocal/RemoveLocal, and relay
// traffic and evictions go out to the Handler it is given.
//
// Files: cluster.go (Cluster, Config, joining and leaving, Call),
// delegate.go (memberlist's callbacks), messages.go (every message between
// nodes, encoded and decoded), link.go (the ordered, acknowledged link to
// each peer), linkauth.go (the links' MAC), table.go (the session table),
// sessions.go (this node's sessions, peers' snapshots and deltas), evict.go
// (duplicate logins across nodes), hlc.go (login stamps). Lock order:
// LOCKS.md at the repository root.
package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/muxnet"
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

// Handler receives what other nodes ask of this one.
type Handler interface {
	// HandleRelay handles a relay payload from node from and returns the
	// reply that goes back to it. It must not block.
	HandleRelay(from string, payload []byte) []byte
	// Evict closes the local session of user with that id: a newer login
	// of the same key won on another node. The cluster asks at most once
	// per session. It must not block.
	Evict(user, session string)
}

// Config configures a Cluster. Zero values take the defaults named.
type Config struct {
	NodeName     string   // required: unique in the cluster
	Bind         string   // gossip host:port; default "127.0.0.1:7946"; port 0 picks one
	Advertise    string   // host:port other nodes reach; default: the bind address
	Seeds        []string // gossip addresses of nodes to join
	SecretKeys   []string // base64 AES keys; the first encrypts; none: no encryption
	SingleDevice bool     // one session per user cluster-wide, not per user and device
	// CallTimeout, default 750ms, bounds a Call (/send waits for it) and
	// each wait for a link batch's ack; a batch not acked by then is sent
	// again (up to 3 times) and its callers answered ErrNoAnswer. Why
	// 750ms: /send must answer "offline" for a silent owner (a host whose
	// packets vanish) within a second, and an ack, sent on receipt,
	// takes a LAN round trip plus the transfer of at most 1 MiB: a few
	// milliseconds, so 750ms is slack of two orders of magnitude for a
	// busy or paused (GC, CPU-starved) peer. It also bounds memberlist's
	// TCPTimeout (a link's dial and write). Raise it for links over a WAN.
	CallTimeout    time.Duration
	QueueLimit     int           // default 65536 items queued per peer link
	RejoinInterval time.Duration // default 30s: re-join seeds and lost members this often (heals partitions)
	Logger         *slog.Logger  // default slog.Default()

	// LinkKey authenticates node-to-node link messages; every node of a
	// cluster must have the same. main derives it from auth.jwt_secret,
	// which every node already shares (DeriveLinkKey). Required.
	LinkKey []byte

	// OnBatch, if set, hears of every batch a link had acknowledged: its
	// item count and the time from send to ack. It must not block.
	OnBatch func(items int, rtt time.Duration)

	// OnNodeFailed, if set, is called on one node (the same one, as every
	// node sees it: heirLocked) when gossip declares a member dead (not
	// left), with the sessions the table held for it, just before they
	// are dropped. It must not block: it runs on memberlist's goroutine.
	OnNodeFailed func(node string, sessions []Located)

	// Tune adjusts memberlist's config before it starts (tests: faster failure detection).
	Tune func(*memberlist.Config)
	// WrapTransport wraps memberlist's network transport (tests: fault injection).
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport

	// PlainTransport uses memberlist's own NetTransport: one TCP
	// connection per stream, as the first release did. Default (false):
	// internal/muxnet, memberlist's streams over one persistent yamux
	// session per peer, which also accepts plain streams. For
	// mixed-version tests and as an escape hatch.
	PlainTransport bool
}

// Cluster is this node's membership in the cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	epoch   uint64
	clock   clock
	table   *table
	handler Handler
	ml      *memberlist.Memberlist

	mu       sync.Mutex // guards the fields below; never held while calling memberlist
	peers    map[string]*peer
	lost     map[string]lostMember  // dead or left members, for /cluster and rejoining
	leaving  map[string]time.Time   // members that said they are leaving
	parked   map[string][]parkedMsg // batches from nodes not yet joined here
	conflict string                 // address of another live node with our name
	perPeer  map[string]*peerStats  // link counters by peer name; they outlive the link, pruned with lost
	linking  bool                   // links start as members join: Start found no conflict

	lastLink atomic.Uint64 // the last link id handed out
	stats    linkStats
	auth     *linkAuth
	refusals refusals
	applying chan struct{} // buffered(1): held by the link applying a snapshot chunk (peer.apply)

	dropAckForTest atomic.Pointer[func(*ackMsg) bool] // tests: acks it returns true for are lost
	selfAddr       string                             // our gossip address, set by Start

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type lostMember struct {
	addr  string
	state string
	since time.Time
}

// New validates cfg and returns a Cluster that has not joined yet.
func New(cfg Config) (*Cluster, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("cluster: NodeName is required")
	}
	if len(cfg.LinkKey) == 0 {
		return nil, errors.New("cluster: LinkKey is required")
	}
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:7946"
	}
	if cfg.CallTimeout <= 0 {
		// Below 1 s, so that /send answers offline for a silent owner
		// (a host whose packets vanish) within a second.
		cfg.CallTimeout = 750 * time.Millisecond
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = 1 << 16
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "cluster", "node", cfg.NodeName), // every cluster line names its node
		epoch:   uint64(time.Now().UnixNano()),
		clock:   clock{now: time.Now},
		table:   newTable(cfg.NodeName, cfg.SingleDevice),
		peers:   map[string]*peer{},
		lost:    map[string]lostMember{},
		leaving: map[string]time.Time{},
		parked:  map[string][]parkedMsg{},
		perPeer: map[string]*peerStats{},
		auth:    newLinkAuth(cfg.LinkKey),

		applying: make(chan struct{}, 1),
	}
	c.table.originLocked(cfg.NodeName).epoch = c.epoch
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// linkStats are running totals over all links.
type linkStats struct {
	batches, items, sendFailures, ackTimeouts, queueFull, unauthenticated atomic.Uint64

	retransmits, duplicates, identityRefused       atomic.Uint64
	snapshotsSent, snapshotsResent, snapshotChunks atomic.Uint64
	snapshotsApplied, snapshotsAbandoned           atomic.Uint64
}

// peerStats are one peer's link counters, beside the node's totals.
type peerStats struct {
	batches, sendFailures, ackTimeouts, queueFull, retransmits atomic.Uint64
}

// PeerStats are the running totals of this node's link to one peer, for
// metrics labelled by peer. A peer's totals outlive its link (a member that
// restarts continues them) and are dropped an hour after it is gone.
type PeerStats struct {
	Batches      uint64 // batches the peer acknowledged
	SendFailures uint64 // batches that could not be sent to it
	AckTimeouts  uint64 // batches it did not acknowledge in time
	QueueFull    uint64 // calls refused because the link's queue was full
	Retransmits  uint64 // batches sent to it again after a timeout or a failed send
}

// PeerStats returns each peer's link totals by peer name.
func (c *Cluster) PeerStats() map[string]PeerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]PeerStats, len(c.perPeer))
	for name, s := range c.perPeer {
		out[name] = PeerStats{
			Batches:      s.batches.Load(),
			SendFailures: s.sendFailures.Load(),
			AckTimeouts:  s.ackTimeouts.Load(),
			QueueFull:    s.queueFull.Load(),
			Retransmits:  s.retransmits.Load(),
		}
	}
	return out
}

// peerStatsLocked returns the counters of the peer called name, made on
// first use; c.mu must be held.
func (c *Cluster) peerStatsLocked(name string) *peerStats {
	s := c.perPeer[name]
	if s == nil {
		s = &peerStats{}
		c.perPeer[name] = s
	}
	return s
}

// Stats are running totals since start, for metrics.
type Stats struct {
	Batches         uint64 // batches acknowledged
	Items           uint64 // items in them (relay calls, table deltas, ...)
	SendFailures    uint64 // batches that could not be sent (peer unreachable)
	AckTimeouts     uint64 // batches sent but not acknowledged in time
	QueueFull       uint64 // calls refused because a link's queue was full
	Unauthenticated uint64 // link messages dropped unread: MAC missing or wrong (forged, or another LinkKey)

	Retransmits     uint64 // batches sent again (same link and seq) after an ack timeout or a failed send
	Duplicates      uint64 // copies of a batch received again (its ack lost or late): acked again, not handled again
	IdentityRefused uint64 // link messages refused: their sender's (name, boot epoch) is not the member memberlist knows

	SnapshotsSent      uint64 // snapshots of this node's sessions started to a peer
	SnapshotsResent    uint64 // of those, started before the previous one to that peer was acked to its last chunk
	SnapshotChunks     uint64 // snapshot chunks sent (each at most snapshotChunkBytes)
	SnapshotsApplied   uint64 // peers' snapshots applied to their last chunk
	SnapshotsAbandoned uint64 // peers' snapshots left unfinished: a chunk missing, or a new one started
}

// Stats returns the running totals.
func (c *Cluster) Stats() Stats {
	return Stats{
		Batches:         c.stats.batches.Load(),
		Items:           c.stats.items.Load(),
		SendFailures:    c.stats.sendFailures.Load(),
		AckTimeouts:     c.stats.ackTimeouts.Load(),
		QueueFull:       c.stats.queueFull.Load(),
		Unauthenticated: c.stats.unauthenticated.Load(),

		Retransmits:     c.stats.retransmits.Load(),
		Duplicates:      c.stats.duplicates.Load(),
		IdentityRefused: c.stats.identityRefused.Load(),

		SnapshotsSent:      c.stats.snapshotsSent.Load(),
		SnapshotsResent:    c.stats.snapshotsResent.Load(),
		SnapshotChunks:     c.stats.snapshotChunks.Load(),
		SnapshotsApplied:   c.stats.snapshotsApplied.Load(),
		SnapshotsAbandoned: c.stats.snapshotsAbandoned.Load(),
	}
}

// nextLinkID returns a link id larger than any before it in this run.
// Ids of different runs are not compared: every message carries its
// sender's boot epoch, and a receiver resets its state for a new one.
func (c *Cluster) nextLinkID() uint64 { return c.lastLink.Add(1) }

// Name returns this node's name.
func (c *Cluster) Name() string { return c.cfg.NodeName }

// Now returns a fresh hybrid logical clock stamp.
func (c *Cluster) Now() uint64 { return uint64(c.clock.Now()) }

// Start binds the gossip address, joins the seeds and keeps re-joining in
// the background. With no seed answering it starts alone and says so. h
// gets relay traffic and evictions. Another live node with this node's
// name is an error.
func (c *Cluster) Start(h Handler) error {
	c.handler = h
	mc, err := c.memberlistConfig()
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start gossip on cluster.bind %s: %w", c.cfg.Bind, err)
	}
	c.ml = ml
	c.selfAddr = ml.LocalNode().Address() // before Join: nothing rewrites it concurrently yet
	joined := c.join()
	if addr := c.conflictAddr(); addr != "" {
		// Nothing was sent over a link: they start below, and the peers
		// refuse what comes from an epoch memberlist does not know anyway.
		c.cancel()
		_ = ml.Shutdown()
		return fmt.Errorf("cluster: another live node is named %q (at %s): node.name must be unique in the cluster", c.cfg.NodeName, addr)
	}
	c.startLinks()
	if !joined && len(c.cfg.Seeds) > 0 {
		c.log.Warn("no seed answered: running alone, retrying in the background", "seeds", c.cfg.Seeds)
	}
	c.wg.Add(1)
	go c.rejoinLoop(joined)
	c.log.Info("gossip started", "addr", c.selfAddr, "members", ml.NumMembers(), "encrypted", len(c.cfg.SecretKeys) > 0)
	return nil
}

// startLinks starts the links of the members that joined during Start's
// join, and has NotifyJoin start those of later ones at once.
func (c *Cluster) startLinks() {
	c.mu.Lock()
	c.linking = true
	peers := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	for _, p := range peers {
		p.start()
	}
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	mc.EnableCompression = false      // a third of SendReliable's throughput, and relay frames are small
	mc.TCPTimeout = c.cfg.CallTimeout // bounds a link's dial and write, so a silent peer cannot hold its sender longer
	mc.DeadNodeReclaimTime = 30 * time.Second
	mc.PushPullInterval = 15 * time.Second
	mc.Logger = log.New(&logBridge{log: c.log}, "", 0)
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Conflict = (*events)(c)

	host, port, err := splitHostPort(c.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: cluster.bind: %w", err)
	}
	var nt memberlist.NodeAwareTransport
	if c.cfg.PlainTransport {
		plain, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("cluster: listen on cluster.bind %s: %w", c.cfg.Bind, err)
		}
		nt, port = plain, plain.GetAutoBindPort()
	} else {
		// Streams to a peer share one TCP connection (yamux); UDP gossip,
		// keyring encryption and labels are memberlist's, as before.
		mux, err := muxnet.New(muxnet.Config{BindAddr: host, BindPort: port, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("cluster: listen on cluster.bind %s: %w", c.cfg.Bind, err)
		}
		nt, port = mux, mux.Port()
	}
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, port, port
	if c.cfg.Advertise != "" {
		ah, ap, err := splitHostPort(c.cfg.Advertise)
		if err != nil {
			_ = nt.Shutdown()
			return nil, fmt.Errorf("cluster: cluster.advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	var t memberlist.NodeAwareTransport = nt
	if c.cfg.WrapTransport != nil {
		t = c.cfg.WrapTransport(t)
	}
	mc.Transport = t

	if len(c.cfg.SecretKeys) > 0 {
		keys := make([][]byte, len(c.cfg.SecretKeys))
		for i, k := range c.cfg.SecretKeys {
			if keys[i], err = base64.StdEncoding.DecodeString(k); err != nil {
				_ = nt.Shutdown()
				return nil, fmt.Errorf("cluster: cluster.secret_keys[%d]: %w", i, err)
			}
		}
		if mc.Keyring, err = memberlist.NewKeyring(keys, keys[0]); err != nil {
			_ = nt.Shutdown()
			return nil, fmt.Errorf("cluster: cluster.secret_keys: %w", err)
		}
	}
	if c.cfg.Tune != nil {
		c.cfg.Tune(mc)
	}
	return mc, nil
}

// splitHostPort splits host:port and resolves a host name to an IP.
func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("invalid port in %q", addr)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	if net.ParseIP(h) == nil {
		ip, err := net.ResolveIPAddr("ip", h)
		if err != nil {
			return "", 0, fmt.Errorf("resolve %q: %w", h, err)
		}
		h = ip.IP.String()
	}
	return h, port, nil
}

// join tries the seeds and every member lost from view once.
func (c *Cluster) join() bool {
	// Our own address among the seeds (one seed list for every VM) would
	// "answer" and hide that nobody else did.
	targets := slices.DeleteFunc(slices.Clone(c.cfg.Seeds), func(s string) bool { return s == c.selfAddr })
	c.mu.Lock()
	left := map[string]bool{} // addresses of members that left on purpose
	for _, m := range c.lost {
		if !slices.Contains(targets, m.addr) {
			targets = append(targets, m.addr)
		}
		if m.state == StateLeft {
			left[m.addr] = true
		}
	}
	alone := len(c.peers) == 0
	c.mu.Unlock()
	if len(targets) == 0 {
		return true
	}
	n, err := c.ml.Join(targets)
	if n == 0 {
		// Members that left on purpose do not answer until they restart, and
		// a node that still has peers is in the cluster: neither is a sign of
		// keys that differ.
		if !alone || !slices.ContainsFunc(targets, func(a string) bool { return !left[a] }) {
			c.log.Debug("re-join: no seed or lost member answered", "tried", targets, "err", err)
			return false
		}
		c.log.Warn("join failed: no seed or lost member answered (if they run, check that cluster.secret_keys match)", "tried", targets, "err", err)
		return false
	}
	c.log.Debug("joined", "answered", n, "members", c.ml.NumMembers())
	return true
}

// rejoinLoop re-joins the seeds and lost members: with backoff while
// nobody answered, then every RejoinInterval, which heals partitions
// (memberlist never re-joins by itself).
func (c *Cluster) rejoinLoop(joined bool) {
	defer c.wg.Done()
	backoff := time.Second
	for {
		wait := c.cfg.RejoinInterval
		if !joined {
			wait = backoff
			backoff = min(2*backoff, c.cfg.RejoinInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.pruneLost()
		if j := c.join(); j && !joined {
			c.log.Info("joined the cluster", "members", c.ml.NumMembers())
			backoff = time.Second
			joined = true
		} else {
			joined = j
		}
	}
}

// lostTTL is how long a dead or left member is listed and re-joined.
const lostTTL = time.Hour

func (c *Cluster) pruneLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, m := range c.lost {
		if time.Since(m.since) > lostTTL {
			delete(c.lost, name)
			if c.peers[name] == nil {
				delete(c.perPeer, name)
			}
		}
	}
}

func (c *Cluster) conflictAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conflict
}

// Leave tells the other members this node is leaving, so they see "left"
// at once, and stops gossip. Safe to call twice.
func (c *Cluster) Leave(ctx context.Context) error {
	var err error
	c.once.Do(func() {
		c.cancel()
		if c.ml == nil {
			return
		}
		c.announceLeaving(ctx)
		// The leave broadcast goes out on the next gossip round; when every
		// peer is gone already, nobody takes it, so do not wait long.
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(max(time.Until(d), 0), timeout)
		}
		if lerr := c.ml.Leave(timeout); lerr != nil {
			c.log.Debug("leave broadcast not confirmed", "err", lerr)
		}
		c.mu.Lock()
		for _, p := range c.peers {
			close(p.stop)
		}
		c.peers = map[string]*peer{}
		c.mu.Unlock()
		if serr := c.ml.Shutdown(); serr != nil {
			err = errors.Join(err, serr)
		}
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = errors.Join(err, ctx.Err())
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// announceLeaving tells every peer this node leaves on purpose, so they
// report it "left" (memberlist's events do not say which), waiting for
// their acks at most half a second.
func (c *Cluster) announceLeaving(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	c.mu.Lock()
	peers := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() { _, _ = p.call(ctx, leavingMsg{}.item()) })
	}
	wg.Wait()
}

// Members returns every member known, this node first: the live ones
// (those this node has a link with), then the dead and left ones it
// remembers. memberlist's own Node structs are not read here: it rewrites
// them in place under its lock.
func (c *Cluster) Members() []Member {
	out := []Member{{Name: c.cfg.NodeName, Addr: c.selfAddr, State: StateAlive, Sessions: c.table.sessionsOf(c.cfg.NodeName)}}
	c.mu.Lock()
	peers := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	lost := maps.Clone(c.lost)
	c.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		m := Member{Name: p.name, Addr: p.node.Address(), State: StateAlive}
		if p.failing {
			m.State = StateSuspect // gossip still lists it, but our link to it fails
		}
		p.mu.Unlock()
		m.Sessions = c.table.sessionsOf(p.name)
		out = append(out, m)
	}
	for name, m := range lost {
		out = append(out, Member{Name: name, Addr: m.addr, State: m.state})
	}
	slices.SortFunc(out[1:], func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Addr returns this node's gossip address (host:port), once started.
func (c *Cluster) Addr() string { return c.selfAddr }

// TableSize returns the number of sessions in the cluster-wide table.
func (c *Cluster) TableSize() int { return c.table.size() }

// Owners returns the nodes whose sessions of user the table knows. The
// slice may be shared: the caller must not modify it.
func (c *Cluster) Owners(user string) []string { return c.table.owners(user) }

// Call sends payload to node's Handler.HandleRelay and returns its reply.
// It fails fast with ErrUnknownNode, ErrUnreachable or ErrQueueFull, and
// with ErrNoAnswer when the node does not answer within CallTimeout.
// Calls to one node are handled there in the order they were made.
func (c *Cluster) Call(ctx context.Context, node string, payload []byte) ([]byte, error) {
	c.mu.Lock()
	p := c.peers[node]
	c.mu.Unlock()
	if p == nil {
		return nil, ErrUnknownNode
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	return p.call(ctx, relayMsg{Payload: payload}.item())
}
