package cluster

import (
	"slices"
	"sync"
	"time"
)

// Entry is one session in the cluster-wide table.
type Entry struct {
	User    string
	Device  string
	Session string // the session id: unique on its node
	Node    string // the node that holds it: the only authority for it
	Stamp   Stamp  // when it was accepted; the newest login of a key wins

	evicted bool // this node's session, told to go (Handler.Evict); guarded by table.mu
}

// origin is what this node knows of one node's sessions.
type origin struct {
	name     []string // the node's name, alone: what owners returns for a user only it holds
	epoch    uint64   // the origin's boot epoch
	seq      uint64   // last delta applied
	sessions map[string]*Entry
	askedAt  time.Time // when a snapshot was last asked for
	// stale holds, while a snapshot of the origin is being applied, the
	// entries of the copy it replaces that it has not named yet: still
	// indexed (lookups see the old copy until the new one replaces it),
	// removed when the snapshot's last chunk is applied. nil otherwise.
	stale map[string]*Entry
	// rooms is the origin's member count of each room it has members in
	// (no zero counts), replaced whole by a snapshot's last chunk.
	rooms map[string]int
}

// table is the cluster-wide session table: every node's sessions, each
// origin's copy updated in order by that origin's deltas and snapshots.
// It also settles which of two logins of a key on different nodes stays
// (evict.go). Its methods ending in Locked are called with t.mu held:
// write, unless they say read.
type table struct {
	self         string // this node's name
	singleDevice bool   // a user's sessions compete whatever their device

	mu      sync.RWMutex // guards the fields below; lock order: table.mu, Cluster.mu, peer.mu (LOCKS.md)
	origins map[string]*origin
	byUser  map[string][]*Entry
}

// newTable returns the table of node self.
func newTable(self string, singleDevice bool) *table {
	return &table{self: self, singleDevice: singleDevice, origins: map[string]*origin{}, byUser: map[string][]*Entry{}}
}

// originLocked returns what the table holds of node name, adding it if new.
func (t *table) originLocked(name string) *origin {
	o := t.origins[name]
	if o == nil {
		o = &origin{name: []string{name}, sessions: map[string]*Entry{}}
		t.origins[name] = o
	}
	return o
}

// addLocked indexes e, replacing an entry with the same session id.
func (t *table) addLocked(o *origin, e *Entry) {
	if old := o.sessions[e.Session]; old != nil {
		t.unindexLocked(old)
	}
	if old := o.stale[e.Session]; old != nil {
		delete(o.stale, e.Session)
		t.unindexLocked(old)
	}
	o.sessions[e.Session] = e
	t.byUser[e.User] = append(t.byUser[e.User], e)
}

// removeLocked forgets o's session with that id and returns it; nil if o
// has none.
func (t *table) removeLocked(o *origin, session string) *Entry {
	e := o.sessions[session]
	if e == nil {
		if e = o.stale[session]; e == nil {
			return nil
		}
		delete(o.stale, session) // a snapshot was left unfinished (handleSnapshot)
	}
	delete(o.sessions, session)
	t.unindexLocked(e)
	return e
}

// unindexLocked takes e out of the by-user index.
func (t *table) unindexLocked(e *Entry) {
	list := t.byUser[e.User]
	if i := slices.Index(list, e); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(t.byUser, e.User)
	} else {
		t.byUser[e.User] = list
	}
}

// dropLocked forgets every session of an origin.
func (t *table) dropLocked(name string) int {
	o := t.origins[name]
	if o == nil {
		return 0
	}
	for _, e := range o.sessions {
		t.unindexLocked(e)
	}
	for _, e := range o.stale {
		t.unindexLocked(e)
	}
	delete(t.origins, name)
	return len(o.sessions) + len(o.stale)
}

// owners returns the nodes holding sessions of user, without duplicates.
// The slice is shared when one node holds them all (the usual case, with
// no allocation: a lookup then never waits for the garbage collector):
// the caller must not modify it.
func (t *table) owners(user string) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	list := t.byUser[user]
	if len(list) == 0 {
		return nil
	}
	if node := list[0].Node; !slices.ContainsFunc(list[1:], func(e *Entry) bool { return e.Node != node }) {
		if o := t.origins[node]; o != nil {
			return o.name
		}
	}
	var out []string
	for _, e := range list {
		if !slices.Contains(out, e.Node) {
			out = append(out, e.Node)
		}
	}
	return out
}

// sessionsOf counts an origin's sessions.
func (t *table) sessionsOf(name string) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if o := t.origins[name]; o != nil {
		return len(o.sessions) + len(o.stale)
	}
	return 0
}

// size counts every session in the table.
func (t *table) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, o := range t.origins {
		n += len(o.sessions) + len(o.stale)
	}
	return n
}

// snapshotLocked returns origin name's sessions as a snapshot, to be
// sent in chunks (snapshotChunk); t.mu must be held (read). The entries
// are the table's own: what the wire carries of them never changes.
func (t *table) snapshotLocked(name string) snapshotMsg {
	o := t.origins[name]
	m := snapshotMsg{Epoch: o.epoch, Seq: o.seq, Entries: make([]*Entry, 0, len(o.sessions)), Rooms: make([]RoomCount, 0, len(o.rooms))}
	for _, e := range o.sessions {
		m.Entries = append(m.Entries, e)
	}
	for room, n := range o.rooms {
		m.Rooms = append(m.Rooms, RoomCount{Room: room, Members: n})
	}
	return m
}

// applySlice is how many entries a snapshot's apply adds or removes per
// hold of table.mu, so that a lookup waits for at most one slice (well
// under a millisecond) however large the snapshot.
const applySlice = 1024

// digest returns origin name's epoch and last seq.
func (t *table) digest(name string) digestMsg {
	t.mu.RLock()
	defer t.mu.RUnlock()
	o := t.origins[name]
	return digestMsg{Node: name, Epoch: o.epoch, Seq: o.seq}
}
