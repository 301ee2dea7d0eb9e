package cluster

import "wsmesh/internal/login"

// Duplicate logins across nodes. The rule (internal/login): a user holds
// one session per device (per user with Config.SingleDevice); of two that
// compete, the newer stays. The session hub applies it to the logins of its
// own node as they register. The table applies it to logins on different
// nodes: it sees every session, with its stamp, and settles each one as it
// is added, accepted here (AddLocal) or learnt from a peer's delta or
// snapshot. Each node evicts only its own sessions, through Handler.Evict,
// and each at most once (Entry.evicted). The node that accepted the newer
// login also tells the older one's node directly (evictMsg), so that
// eviction does not wait for a snapshot when a delta was missed; that
// node's table has then settled it already, or settles it now, once.

// sameKey reports whether two sessions compete (login.SameKey).
func (t *table) sameKey(a, b *Entry) bool {
	return login.SameKey(t.singleDevice, a.User, a.Device, b.User, b.Device)
}

// condemnLocked marks this node's session l as evicted and reports whether
// it was not already; t.mu must be held (write).
func (t *table) condemnLocked(l *Entry) bool {
	if l.evicted || l.Node != t.self {
		return false
	}
	l.evicted = true
	return true
}

// evictionsLocked settles e, just added, against the sessions of its key
// on other nodes than e's (the hub settles those on one node). here: this
// node's sessions that lose, e itself when a newer one is known, each
// returned once over its life. elsewhere: when e is this node's, the older
// sessions on other nodes it replaces, whose nodes are told directly.
// t.mu must be held (write).
func (t *table) evictionsLocked(e *Entry) (here, elsewhere []*Entry) {
	for _, other := range t.byUser[e.User] {
		if other.Node == e.Node || !t.sameKey(other, e) {
			continue
		}
		winner, loser := e, other
		if newer(other, e) {
			winner, loser = other, e
		}
		switch {
		case t.condemnLocked(loser):
			here = append(here, loser)
		case winner == e && e.Node == t.self:
			elsewhere = append(elsewhere, loser)
		}
	}
	return here, elsewhere
}

// evictHere has the Handler close this node's sessions that lost.
func (c *Cluster) evictHere(losers []*Entry) {
	for _, l := range losers {
		c.log.Debug("newer login of the same key on another node: evicting", "user", l.User, "device", l.Device, "session", l.Session)
		c.handler.Evict(l.User, l.Session)
	}
}

// sendEvict tells loser's node that winner, a newer login here, replaces it.
func (c *Cluster) sendEvict(loser, winner *Entry) {
	c.mu.Lock()
	p := c.peers[loser.Node]
	c.mu.Unlock()
	if p == nil {
		return
	}
	m := evictMsg{User: loser.User, Session: loser.Session, Winner: winner}
	if err := p.send(m.item()); err != nil {
		c.log.Warn("could not tell a node to evict an older login; the delta will", "peer", loser.Node, "user", loser.User, "err", err)
	}
}

// handleEvict evicts this node's session that the peer says a newer
// login replaces, unless it is gone, not older, or evicted already.
func (p *peer) handleEvict(m evictMsg) {
	c, t := p.c, p.c.table
	c.clock.Observe(m.Winner.Stamp)
	t.mu.Lock()
	l := t.origins[c.cfg.NodeName].sessions[m.Session]
	lose := l != nil && l.User == m.User && m.Winner.Node != l.Node &&
		t.sameKey(m.Winner, l) && newer(m.Winner, l) && t.condemnLocked(l)
	t.mu.Unlock()
	if lose {
		c.evictHere([]*Entry{l})
	}
}
