package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate adapts the Cluster to memberlist.Delegate. Its methods copy
// what they need, hand off and return.
type delegate Cluster

// NodeMeta is what this node gossips about itself: its boot epoch (metaMsg).
func (d *delegate) NodeMeta(limit int) []byte { return metaMsg{Epoch: d.epoch}.append(nil) }

// metaEpoch returns the boot epoch in a member's meta; 0 if it has none.
func metaEpoch(meta []byte) uint64 {
	m, _ := decodeMeta(meta)
	return m.Epoch
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// NotifyMsg checks a link message's MAC, decodes it once and hands it to
// the link of the node that sent it. A message without the right MAC is
// counted and dropped unread: anyone who reaches the gossip port can send
// one. A malformed one is logged and dropped: its sender gets no ack, times
// out and resends.
func (d *delegate) NotifyMsg(b []byte) {
	c := (*Cluster)(d)
	body, ok := c.auth.open(b, c.cfg.NodeName)
	if !ok {
		c.refuse(b)
		return
	}
	msg := bytes.Clone(body) // memberlist reuses b; the decoded messages alias msg
	var err error
	switch t := msgType(msg[0]); t {
	case msgBatch:
		err = decodeThen(msg, decodeBatch, c.handleBatch)
	case msgAck:
		err = decodeThen(msg, decodeAck, c.handleAck)
	default:
		c.log.Warn("link message of an unknown type dropped", "type", t, "from", claimedSender(msg))
	}
	if err != nil {
		c.log.Warn("malformed link message dropped", "from", claimedSender(msg), "err", err)
	}
}

// handleBatch queues a batch for its sender's link's receiver, or parks it
// while the sender has not been seen joining.
func (c *Cluster) handleBatch(m *batchMsg) {
	c.mu.Lock()
	p := c.peers[m.From]
	if p == nil {
		// The sender saw us join before we saw it: keep the batch until we do.
		c.parkLocked(m)
	}
	c.mu.Unlock()
	if p == nil {
		return
	}
	select {
	case p.inbox <- m:
	default: // the sender times out and resyncs
		c.log.Warn("inbox full: batch dropped", "peer", m.From)
	}
}

// handleAck hands an ack to its link's sender, which waits for it,
// if it comes from the member memberlist knows by that name.
func (c *Cluster) handleAck(m *ackMsg) {
	c.mu.Lock()
	p := c.peers[m.From]
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	epoch := p.epoch
	p.mu.Unlock()
	if !sameRun(m.Epoch, epoch) {
		c.refuseIdentity("ack", m.From, m.Epoch, epoch)
		return
	}
	if drop := c.dropAckForTest.Load(); drop != nil && (*drop)(m) {
		return
	}
	select {
	case p.acks <- m:
	default:
	}
}

// parkedMsg is a batch from a node this one has not seen join yet.
type parkedMsg struct {
	msg *batchMsg
	at  time.Time
}

// Parking limits: a few batches per sender, from a few senders.
const (
	maxParkedPerNode = 8
	maxParkedNodes   = 64
)

// parkLocked keeps a batch from an unknown sender for a moment; c.mu must
// be held.
func (c *Cluster) parkLocked(msg *batchMsg) {
	from := msg.From
	for name, list := range c.parked { // expire
		if time.Since(list[len(list)-1].at) > c.cfg.CallTimeout {
			delete(c.parked, name)
		}
	}
	list := c.parked[from]
	if len(list) >= maxParkedPerNode || (list == nil && len(c.parked) >= maxParkedNodes) {
		c.log.Debug("batch from an unknown node dropped", "from", from)
		return
	}
	c.parked[from] = append(list, parkedMsg{msg: msg, at: time.Now()})
}

// LocalState is the push/pull digest (digestMsg): this node's name, epoch
// and seq, not its sessions.
func (d *delegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	return c.table.digest(c.cfg.NodeName).append(nil)
}

// MergeRemoteState asks a peer for its snapshot when its digest shows
// deltas this node has not seen.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	m, err := decodeDigest(buf)
	if err != nil || m.Node == c.cfg.NodeName {
		return
	}
	c.table.mu.RLock()
	o := c.table.origins[m.Node]
	gone := o == nil || o.epoch != m.Epoch // no copy of the peer's current run
	var seq uint64
	if o != nil {
		seq = o.seq
	}
	c.table.mu.RUnlock()
	c.mu.Lock()
	p := c.peers[m.Node]
	c.mu.Unlock()
	// While a snapshot of the peer's is being applied, the table is behind
	// until its last chunk is: asking again would only have it sent twice.
	if p == nil || p.syncing.Load() {
		return
	}
	if gone || p.behindDigest(seq, m.Seq) {
		c.log.Debug("digest shows missed deltas: asking for a snapshot", "peer", m.Node, "seq", m.Seq, "have", seq)
		_ = p.send(snapshotReqMsg{}.item())
	}
}

// behindDigest reports whether this node's copy of the peer's table, at
// seq, is truly behind a digest that said the peer was at digestSeq. A
// copy a few deltas behind a digest is the usual case, not a loss: the
// deltas are in flight on the link (in a batch being sent, or lingering).
// So a digest only records its seq; the copy is behind if it has not
// reached the seq the previous digest recorded (one push/pull interval
// ago, 30 s by default), and that previous digest is at least a
// CallTimeout old. Called from memberlist's push/pull, one at a time per
// peer.
func (p *peer) behindDigest(seq, digestSeq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, at := p.digestSeq, p.digestAt
	p.digestSeq, p.digestAt = digestSeq, time.Now()
	return seq < prev && time.Since(at) >= p.c.cfg.CallTimeout
}

// events adapts the Cluster to memberlist's EventDelegate and
// ConflictDelegate. memberlist calls them with its locks held: they must
// not call back into memberlist.
type events Cluster

func (e *events) NotifyJoin(n *memberlist.Node) {
	c := (*Cluster)(e)
	if n.Name == c.cfg.NodeName {
		return
	}
	node := *n
	c.mu.Lock()
	delete(c.lost, n.Name)
	p := c.peers[n.Name]
	fresh := p == nil && c.ctx.Err() == nil
	var parked []parkedMsg
	if fresh {
		p = newPeer(c, &node, metaEpoch(n.Meta))
		c.peers[n.Name] = p
		parked = c.parked[n.Name]
		delete(c.parked, n.Name)
	}
	linking := c.linking
	c.mu.Unlock()
	if fresh {
		for _, m := range parked {
			if time.Since(m.at) < c.cfg.CallTimeout {
				p.inbox <- m.msg // room: the inbox is new and parking is bounded below its size
			}
		}
		if linking {
			p.start()
		} // else Start starts it, once it knows no live node has our name
	}
	c.log.Info("member joined", "member", n.Name, "addr", n.Address())
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(e)
	if n.Name == c.cfg.NodeName {
		return
	}
	c.mu.Lock()
	state := StateDead
	if at, ok := c.leaving[n.Name]; ok && time.Since(at) < time.Minute {
		state = StateLeft
	}
	delete(c.leaving, n.Name)
	if p := c.peers[n.Name]; p != nil {
		close(p.stop)
		delete(c.peers, n.Name)
	}
	c.lost[n.Name] = lostMember{addr: n.Address(), state: state, since: time.Now()}
	c.mu.Unlock()
	if state == StateDead {
		c.reportGone(n.Name)
	}
	c.table.mu.Lock()
	dropped := c.table.dropLocked(n.Name)
	c.table.mu.Unlock()
	msg := "member failed"
	if state == StateLeft {
		msg = "member left"
	}
	c.log.Info(msg, "member", n.Name, "addr", n.Address(), "sessions_dropped", dropped)
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	c := (*Cluster)(e)
	c.mu.Lock()
	p := c.peers[n.Name]
	c.mu.Unlock()
	if p == nil {
		return
	}
	node := *n
	epoch := metaEpoch(n.Meta)
	p.mu.Lock()
	p.node = &node
	restarted := epoch != p.epoch
	p.epoch = epoch
	p.mu.Unlock()
	if restarted {
		c.log.Info("member restarted", "member", n.Name, "addr", n.Address())
		c.reportGone(n.Name) // its previous run's sessions ended with it, unannounced
		p.resync()
	}
}

// reportGone hands the sessions the table holds for member name to
// Config.OnNodeFailed, if this node is the member's heir: the member
// crashed (declared dead), or came back as a new run before gossip
// declared it dead, and in both cases its previous run's sessions ended
// without a word from it. It must be called before those entries are
// dropped or replaced.
func (c *Cluster) reportGone(name string) {
	if c.cfg.OnNodeFailed == nil {
		return
	}
	c.mu.Lock()
	heir := c.heirLocked(name) == c.cfg.NodeName
	c.mu.Unlock()
	if !heir {
		return
	}
	c.table.mu.RLock()
	gone := c.table.sessionsOfLocked(name)
	c.table.mu.RUnlock()
	c.log.Info("this node reports the failed member's sessions gone", "member", name, "sessions", len(gone))
	c.cfg.OnNodeFailed(name, gone)
}

// NotifyConflict hears of two nodes claiming one name.
func (e *events) NotifyConflict(existing, other *memberlist.Node) {
	c := (*Cluster)(e)
	if existing.Name == c.cfg.NodeName {
		c.mu.Lock()
		c.conflict = other.Address()
		c.mu.Unlock()
		c.log.Error("another node uses this node's name: node.name must be unique", "name", existing.Name, "other", other.Address())
		return
	}
	c.log.Warn("two nodes claim one name", "name", existing.Name, "known", existing.Address(), "other", other.Address())
}

// logBridge turns memberlist's "[LEVEL] memberlist: text" lines into slog records.
type logBridge struct{ log *slog.Logger }

var logLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn},
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
}

func (l *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	level := slog.LevelInfo
	for _, ll := range logLevels {
		if rest, ok := strings.CutPrefix(line, ll.prefix); ok {
			level, line = ll.level, rest
			break
		}
	}
	// memberlist.Shutdown closes the transport before it stops its gossip
	// ticker: a tick in between fails on this node's own closed socket and
	// memberlist says [ERR]. That is a clean shutdown, not an error.
	if level > slog.LevelDebug && strings.Contains(line, net.ErrClosed.Error()) {
		level = slog.LevelDebug
	}
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, line)
	}
	return len(p), nil
}
