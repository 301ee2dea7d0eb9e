package cluster

import (
	"runtime"
	"time"
)

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
	c.announceTableLocked(deltaMsg{Epoch: c.epoch, Seq: o.seq, Op: opConnect, Entry: e}.item(), true)
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
		c.announceTableLocked(deltaMsg{Epoch: c.epoch, Seq: o.seq, Op: opDisconnect, Entry: e}.item(), false)
	}
	t.mu.Unlock()
}

// announceTableLocked queues a delta to every peer; c.table.mu must be held
// (write): deltas are queued in seq order. An urgent delta makes a
// routing possible that was not (a connect: the user is reachable here;
// a room's first member here): it goes at once, with the deltas queued
// before it. Others (a disconnect, a room count that stays above zero)
// may linger up to deltaLinger for company: a peer that still routes to
// a session that ended gets "no session" from this node, which is true.
func (c *Cluster) announceTableLocked(delta item, urgent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.enqueueDeltaTableLocked(delta, urgent)
	}
}

// inSnapshot is a peer's snapshot that the peer's applier is applying,
// chunk by chunk.
type inSnapshot struct {
	epoch, seq uint64
	next       uint64  // the index of the chunk expected next
	o          *origin // the origin it fills: if the table drops it (the peer left), it stops
	ignore     bool    // from an earlier run of the peer: its chunks are skipped
	entries    int
	rooms      map[string]int // the peer's rooms so far, to replace the origin's at the end
}

// handleSnapshot applies a chunk of the peer's snapshot. A snapshot
// replaces what this node knows of the peer's sessions, unless it is from
// an earlier run of the peer, and evicts this node's sessions that the
// peer's newer ones replace.
//
// It never holds table.mu for more than applySlice entries, so that
// lookups (Owners) do not wait behind a large snapshot: the chunk is
// decoded, its entries stamped with their node and the clock advanced
// outside the lock, then the entries are added a slice per lock hold.
// Until the last chunk is applied, the entries of the copy it replaces
// that it has not named yet stay in the table (origin.stale): a lookup
// sees the old copy or the new one for each session, never neither. The
// last chunk removes those and sets the origin's epoch and seq, after
// which the peer's deltas apply. Those come after the last chunk on the
// same ordered link, and this same goroutine applies them, so none is
// applied to a half-built copy or lost.
func (p *peer) handleSnapshot(m snapshotMsg) {
	c := p.c
	if m.Index == 0 {
		p.beginSnapshot(m)
	}
	s := p.in
	if s == nil || m.Index != s.next || m.Epoch != s.epoch || m.Seq != s.seq {
		// A chunk is missing (the peer gave a batch up and started over,
		// or this link was made in the middle of a snapshot): ask for one
		// from the start, once until its chunk 0 comes.
		p.abandonSnapshot("chunk out of order")
		if !p.askedRestart {
			p.askedRestart = true
			_ = p.send(snapshotReqMsg{Restart: true}.item())
		}
		return
	}
	s.next++
	if s.ignore {
		if !m.More {
			p.in = nil
			p.syncing.Store(false)
		}
		return
	}
	for _, r := range m.Rooms {
		if r.Members > 0 {
			if s.rooms == nil {
				s.rooms = map[string]int{}
			}
			s.rooms[r.Room] = r.Members
		}
	}
	var newest Stamp
	for _, e := range m.Entries {
		e.Node = p.name
		newest = max(newest, e.Stamp)
	}
	c.clock.Observe(newest)
	var here []*Entry
	for rest := m.Entries; len(rest) > 0; {
		part := rest[:min(len(rest), applySlice)]
		rest = rest[len(part):]
		if !p.underTableLock(func(t *table) {
			for _, e := range part {
				t.addLocked(s.o, e)
				h, _ := t.evictionsLocked(e)
				here = append(here, h...)
			}
		}) {
			c.evictHere(here)
			return
		}
	}
	s.entries += len(m.Entries)
	if !m.More {
		p.finishSnapshot(s)
	}
	c.evictHere(here)
}

// beginSnapshot starts applying a snapshot whose chunk 0 is m: the
// peer's sessions known so far become stale, to be replaced.
func (p *peer) beginSnapshot(m snapshotMsg) {
	if p.in != nil {
		p.abandonSnapshot("a new one started")
	}
	p.askedRestart = false
	t := p.c.table
	s := &inSnapshot{epoch: m.Epoch, seq: m.Seq}
	t.mu.Lock()
	if old := t.origins[p.name]; old != nil && old.epoch > m.Epoch {
		t.mu.Unlock()
		s.ignore = true // from a previous run of the peer
		p.in = s
		return
	}
	s.o = t.originLocked(p.name)
	restart := s.o.stale != nil
	if !restart {
		s.o.stale, s.o.sessions = s.o.sessions, map[string]*Entry{}
	}
	t.mu.Unlock()
	p.in = s
	p.syncing.Store(true)
	if restart {
		// An earlier snapshot stopped halfway: what it added is stale too.
		for {
			done := false
			if !p.underTableLock(func(t *table) {
				n := 0
				for id, e := range s.o.sessions {
					if n == applySlice {
						return
					}
					s.o.stale[id] = e
					delete(s.o.sessions, id)
					n++
				}
				done = true
			}) || done {
				return
			}
		}
	}
}

// applyLocked runs f, which handles at most applySlice entries, with the
// table locked (write), if the table still holds the origin of the
// snapshot being applied. False: it does not (the peer left), and the
// snapshot is dropped.
//
// It yields the processor after each slice: the applier then never runs
// long enough to be preempted while it holds the lock, which would leave
// lookups waiting for it to be scheduled again (tens of milliseconds on a
// busy machine, and a garbage collection taking a core).
func (p *peer) underTableLock(f func(t *table)) bool {
	defer runtime.Gosched()
	t := p.c.table
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := p.in; s == nil || t.origins[p.name] != s.o {
		p.in = nil
		p.syncing.Store(false)
		return false
	}
	f(t)
	return true
}

// finishSnapshot removes the stale entries, a slice per lock hold, and
// then sets the origin's epoch and seq: the snapshot is applied.
func (p *peer) finishSnapshot(s *inSnapshot) {
	for {
		done := false
		if !p.underTableLock(func(t *table) {
			n := 0
			for id, e := range s.o.stale {
				if n == applySlice {
					return
				}
				delete(s.o.stale, id)
				t.unindexLocked(e)
				n++
			}
			s.o.stale = nil
			s.o.rooms = s.rooms
			s.o.epoch, s.o.seq = s.epoch, s.seq
			done = true
		}) {
			return
		}
		if done {
			break
		}
	}
	p.in = nil
	p.syncing.Store(false)
	p.c.stats.snapshotsApplied.Add(1)
	p.c.log.Debug("snapshot applied", "peer", p.name, "sessions", s.entries, "chunks", s.next, "seq", s.seq)
}

// abandonSnapshot gives up the snapshot being applied; its entries stay
// (with the stale ones) until the next snapshot of the peer replaces them.
func (p *peer) abandonSnapshot(why string) {
	if p.in == nil {
		return
	}
	p.c.stats.snapshotsAbandoned.Add(1)
	p.c.log.Debug("snapshot abandoned", "peer", p.name, "why", why, "chunks", p.in.next)
	p.in = nil
	p.syncing.Store(false)
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
	switch m.Op {
	case opConnect:
		e := m.Entry
		e.Node = p.name
		c.clock.Observe(e.Stamp)
		t.addLocked(o, e)
		here, _ = t.evictionsLocked(e)
	case opDisconnect:
		t.removeLocked(o, m.Entry.Session)
	case opRoom:
		o.setRoom(m.Room.Room, m.Room.Members)
	}
	t.mu.Unlock()
	c.evictHere(here)
}
