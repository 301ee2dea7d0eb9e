package cluster

import "time"

// LocalSession is a session this node holds, as the session hub reports it.
type LocalSession struct {
	User, Device, Session string
	Stamp                 uint64 // from Now(), taken when the session was accepted
}

// AddLocal records a session accepted here, announces it to every peer and
// settles it against the logins of its key on other nodes (evict.go): if
// one is newer, this one goes at once (Handler.Evict); older ones are told
// directly to go, without waiting for the delta. Logins of one key on this
// node are the session hub's to settle.
func (c *Cluster) AddLocal(s LocalSession) {
	e := &Entry{User: s.User, Device: s.Device, Session: s.Session, Node: c.cfg.NodeName, Stamp: Stamp(s.Stamp)}
	c.clock.Observe(e.Stamp)
	t := c.table
	t.mu.Lock()
	o := t.origins[c.cfg.NodeName]
	o.seq++
	t.addLocked(o, e)
	here, elsewhere := t.evictionsLocked(e)
	c.announceTableLocked(deltaMsg{Epoch: c.epoch, Seq: o.seq, Op: opConnect, Entry: e}.item())
	t.mu.Unlock()

	c.evictHere(here)
	for _, l := range elsewhere {
		c.sendEvict(l, e)
	}
}

// RemoveLocal forgets a session of this node and announces it.
func (c *Cluster) RemoveLocal(user, session string) {
	t := c.table
	t.mu.Lock()
	o := t.origins[c.cfg.NodeName]
	if e := t.removeLocked(o, session); e != nil {
		o.seq++
		c.announceTableLocked(deltaMsg{Epoch: c.epoch, Seq: o.seq, Op: opDisconnect, Entry: e}.item())
	}
	t.mu.Unlock()
}

// announceTableLocked queues a delta to every peer; c.table.mu must be held
// (write): deltas are queued in seq order.
func (c *Cluster) announceTableLocked(delta item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.enqueueDeltaTableLocked(delta)
	}
}

// handleSnapshot replaces what this node knows of the peer's sessions,
// unless the snapshot is from an earlier run of the peer, and evicts this
// node's sessions that the peer's newer ones replace.
func (p *peer) handleSnapshot(m snapshotMsg) {
	c, t := p.c, p.c.table
	var here []*Entry
	t.mu.Lock()
	if old := t.origins[p.name]; old != nil && old.epoch > m.Epoch {
		t.mu.Unlock()
		return // from a previous run of the peer
	}
	t.dropLocked(p.name)
	o := t.originLocked(p.name)
	o.epoch, o.seq = m.Epoch, m.Seq
	for _, e := range m.Entries {
		e.Node = p.name
		c.clock.Observe(e.Stamp)
		t.addLocked(o, e)
		h, _ := t.evictionsLocked(e)
		here = append(here, h...)
	}
	t.mu.Unlock()
	c.log.Debug("snapshot applied", "peer", p.name, "sessions", len(m.Entries), "seq", m.Seq)
	c.evictHere(here)
}

// handleDelta applies the peer's next delta, or asks the peer for a
// snapshot when the delta shows a gap or a new run of it; a connect evicts
// this node's sessions it replaces.
func (p *peer) handleDelta(m deltaMsg) {
	c, t := p.c, p.c.table
	t.mu.Lock()
	o := t.origins[p.name]
	switch {
	case o != nil && o.epoch == m.Epoch && m.Seq <= o.seq:
		t.mu.Unlock()
		return // already applied (in a snapshot)
	case o == nil || o.epoch != m.Epoch || m.Seq != o.seq+1:
		// A gap or a new run of the peer: ask for its snapshot, which
		// comes on the same ordered link, before its later deltas.
		ask := o == nil || time.Since(o.askedAt) > c.cfg.CallTimeout
		if o != nil && ask {
			o.askedAt = time.Now()
		}
		t.mu.Unlock()
		if ask {
			c.log.Debug("session table gap: asking for a snapshot", "peer", p.name, "seq", m.Seq)
			_ = p.send(snapshotReqMsg{}.item())
		}
		return
	}
	o.seq = m.Seq
	var here []*Entry
	if m.Op == opConnect {
		e := m.Entry
		e.Node = p.name
		c.clock.Observe(e.Stamp)
		t.addLocked(o, e)
		here, _ = t.evictionsLocked(e)
	} else {
		t.removeLocked(o, m.Entry.Session)
	}
	t.mu.Unlock()
	c.evictHere(here)
}
