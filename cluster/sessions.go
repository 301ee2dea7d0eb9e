package cluster

import (
	"time"

	"wsmesh/internal/wire"
)

// LocalSession is a session this node holds, as the session hub reports it.
type LocalSession struct {
	User, Device, Session string
	Stamp                 uint64 // from Now(), taken when the session was accepted
}

// sameKeyLocked reports whether two sessions compete: same user and device
// (same user with SingleDevice).
func (c *Cluster) sameKey(a, b *Entry) bool {
	return a.User == b.User && (c.cfg.SingleDevice || a.Device == b.Device)
}

// AddLocal records a session accepted here and announces it to every peer.
// If the table knows a newer session of the same key on another node, this
// one loses at once (Handler.Evict); older ones elsewhere are told directly
// to go, without waiting for gossip.
func (c *Cluster) AddLocal(s LocalSession) {
	self := c.cfg.NodeName
	e := &Entry{User: s.User, Device: s.Device, Session: s.Session, Node: self, Stamp: Stamp(s.Stamp)}
	c.clock.Observe(e.Stamp)
	evictSelf := false
	var losers []*Entry
	t := c.table
	t.mu.Lock()
	o := t.origins[self]
	o.seq++
	t.addLocked(o, e)
	for _, other := range t.byUser[e.User] {
		if other.Node == self || !c.sameKey(other, e) {
			continue
		}
		if newer(other, e) {
			evictSelf = true
		} else {
			losers = append(losers, other)
		}
	}
	c.announceLocked(encodeDelta(c.epoch, o.seq, opConnect, e))
	t.mu.Unlock()

	if evictSelf {
		c.log.Info("newer login of the same key elsewhere: evicting", "user", e.User, "device", e.Device, "session", e.Session)
		c.handler.Evict(e.User, e.Session)
	}
	for _, l := range losers {
		c.sendEvict(l, e)
	}
}

// RemoveLocal forgets a session of this node and announces it.
func (c *Cluster) RemoveLocal(user, session string) {
	self := c.cfg.NodeName
	t := c.table
	t.mu.Lock()
	o := t.origins[self]
	if e := t.removeLocked(o, session); e != nil {
		o.seq++
		c.announceLocked(encodeDelta(c.epoch, o.seq, opDisconnect, e))
	}
	t.mu.Unlock()
}

// announceLocked queues a delta to every peer; c.table.mu must be held.
func (c *Cluster) announceLocked(delta []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.enqueueDeltaLocked(delta)
	}
}

// sendEvict tells loser's node that winner, a newer login, replaces it.
func (c *Cluster) sendEvict(loser, winner *Entry) {
	c.mu.Lock()
	p := c.peers[loser.Node]
	c.mu.Unlock()
	if p == nil {
		return
	}
	b := wire.AppendString(nil, loser.User)
	b = wire.AppendString(b, loser.Session)
	b = appendEntry(b, winner)
	b = wire.AppendString(b, winner.Node)
	if err := p.enqueue(&call{kind: kindEvict, payload: b}); err != nil {
		c.log.Warn("could not tell a node to evict an older login; gossip will", "peer", loser.Node, "user", loser.User, "err", err)
	}
}

// handleItem handles one item of a peer's batch and returns its reply.
func (c *Cluster) handleItem(p *peer, kind byte, payload []byte) []byte {
	switch kind {
	case kindRelay:
		return c.handler.HandleRelay(p.name, payload)
	case kindSnapshotReq:
		p.mu.Lock()
		p.needSnapshot = true
		p.mu.Unlock()
		p.kick()
	case kindSnapshot:
		c.applySnapshot(p, payload)
	case kindDelta:
		c.applyDelta(p, payload)
	case kindEvict:
		c.applyEvict(p, payload)
	case kindLeaving:
		c.mu.Lock()
		c.leaving[p.name] = time.Now()
		c.mu.Unlock()
	default:
		c.log.Warn("unknown item kind from peer", "peer", p.name, "kind", kind)
	}
	return nil
}

func (c *Cluster) applySnapshot(p *peer, payload []byte) {
	r := wire.NewReader(payload)
	epoch, seq := r.Uvarint(), r.Uvarint()
	n := r.Count()
	entries := make([]*Entry, 0, n)
	for range n {
		entries = append(entries, readEntry(r, p.name))
	}
	if r.Err() != nil {
		c.log.Warn("malformed snapshot", "peer", p.name, "err", r.Err())
		return
	}
	t := c.table
	var losers []*Entry
	t.mu.Lock()
	if old := t.origins[p.name]; old != nil && old.epoch > epoch {
		t.mu.Unlock()
		return // from a previous run of the peer
	}
	t.dropLocked(p.name)
	o := t.originLocked(p.name)
	o.epoch, o.seq = epoch, seq
	for _, e := range entries {
		c.clock.Observe(e.Stamp)
		t.addLocked(o, e)
		losers = append(losers, c.localLosersLocked(e)...)
	}
	t.mu.Unlock()
	c.log.Debug("snapshot applied", "peer", p.name, "sessions", len(entries), "seq", seq)
	c.evictLocal(losers)
}

func (c *Cluster) applyDelta(p *peer, payload []byte) {
	r := wire.NewReader(payload)
	epoch, seq, op := r.Uvarint(), r.Uvarint(), r.Byte()
	var e *Entry
	if op == opConnect {
		e = readEntry(r, p.name)
	} else {
		e = &Entry{Session: r.String(), Node: p.name}
	}
	if r.Err() != nil {
		c.log.Warn("malformed delta", "peer", p.name, "err", r.Err())
		return
	}
	t := c.table
	t.mu.Lock()
	o := t.origins[p.name]
	switch {
	case o != nil && o.epoch == epoch && seq <= o.seq:
		t.mu.Unlock()
		return // already applied (in a snapshot)
	case o == nil || o.epoch != epoch || seq != o.seq+1:
		// A gap or a new run of the peer: ask for its snapshot, which
		// comes on the same ordered link, before its later deltas.
		ask := o == nil || time.Since(o.askedAt) > c.cfg.CallTimeout
		if o != nil && ask {
			o.askedAt = time.Now()
		}
		t.mu.Unlock()
		if ask {
			c.log.Debug("session table gap: asking for a snapshot", "peer", p.name, "seq", seq)
			_ = p.enqueue(&call{kind: kindSnapshotReq})
		}
		return
	}
	o.seq = seq
	var losers []*Entry
	if op == opConnect {
		c.clock.Observe(e.Stamp)
		t.addLocked(o, e)
		losers = c.localLosersLocked(e)
	} else {
		t.removeLocked(o, e.Session)
	}
	t.mu.Unlock()
	c.evictLocal(losers)
}

func (c *Cluster) applyEvict(p *peer, payload []byte) {
	r := wire.NewReader(payload)
	user, victim := r.String(), r.String()
	winner := readEntry(r, "")
	winner.Node = r.String()
	if r.Err() != nil {
		c.log.Warn("malformed evict", "peer", p.name, "err", r.Err())
		return
	}
	c.clock.Observe(winner.Stamp)
	t := c.table
	t.mu.RLock()
	l := t.origins[c.cfg.NodeName].sessions[victim]
	lose := l != nil && l.User == user && c.sameKey(l, winner) && newer(winner, l)
	t.mu.RUnlock()
	if lose {
		c.evictLocal([]*Entry{l})
	}
}

// localLosersLocked returns this node's sessions that e, a remote session,
// replaces; c.table.mu must be held.
func (c *Cluster) localLosersLocked(e *Entry) []*Entry {
	var out []*Entry
	for _, l := range c.table.byUser[e.User] {
		if l.Node == c.cfg.NodeName && c.sameKey(l, e) && newer(e, l) {
			out = append(out, l)
		}
	}
	return out
}

func (c *Cluster) evictLocal(losers []*Entry) {
	for _, l := range losers {
		c.log.Info("newer login of the same key on another node: evicting", "user", l.User, "device", l.Device, "session", l.Session)
		c.handler.Evict(l.User, l.Session)
	}
}
