package cluster

import (
	"slices"
	"sync"
	"time"

	"wsmesh/internal/wire"
)

// Entry is one session in the cluster-wide table.
type Entry struct {
	User    string
	Device  string
	Session string // unique on its node
	Node    string // the node that holds it: the only authority for it
	Stamp   Stamp  // when it was accepted; the newest login of a key wins
}

// origin is what this node knows of one node's sessions.
type origin struct {
	epoch    uint64 // the origin's boot epoch
	seq      uint64 // last delta applied
	sessions map[string]*Entry
	askedAt  time.Time // when a snapshot was last asked for
}

// table is the cluster-wide session table: every node's sessions, each
// origin's copy updated in order by that origin's deltas and snapshots.
type table struct {
	mu      sync.RWMutex // lock order: table.mu before peer.mu
	origins map[string]*origin
	byUser  map[string][]*Entry
}

func newTable() *table {
	return &table{origins: map[string]*origin{}, byUser: map[string][]*Entry{}}
}

func (t *table) originLocked(name string) *origin {
	o := t.origins[name]
	if o == nil {
		o = &origin{sessions: map[string]*Entry{}}
		t.origins[name] = o
	}
	return o
}

// addLocked indexes e, replacing an entry with the same session id.
func (t *table) addLocked(o *origin, e *Entry) {
	if old := o.sessions[e.Session]; old != nil {
		t.unindexLocked(old)
	}
	o.sessions[e.Session] = e
	t.byUser[e.User] = append(t.byUser[e.User], e)
}

func (t *table) removeLocked(o *origin, session string) *Entry {
	e := o.sessions[session]
	if e == nil {
		return nil
	}
	delete(o.sessions, session)
	t.unindexLocked(e)
	return e
}

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
	delete(t.origins, name)
	return len(o.sessions)
}

// owners returns the nodes holding sessions of user, without duplicates.
func (t *table) owners(user string) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []string
	for _, e := range t.byUser[user] {
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
		return len(o.sessions)
	}
	return 0
}

// size counts every session in the table.
func (t *table) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, o := range t.origins {
		n += len(o.sessions)
	}
	return n
}

// Delta ops.
const (
	opConnect    byte = 1
	opDisconnect byte = 2
)

func appendEntry(b []byte, e *Entry) []byte {
	b = wire.AppendString(b, e.Session)
	b = wire.AppendString(b, e.User)
	b = wire.AppendString(b, e.Device)
	return wire.AppendUvarint(b, uint64(e.Stamp))
}

func readEntry(r *wire.Reader, node string) *Entry {
	return &Entry{Session: r.String(), User: r.String(), Device: r.String(), Stamp: Stamp(r.Uvarint()), Node: node}
}

// encodeDelta: epoch, seq, op, then the entry (connect) or session id.
func encodeDelta(epoch, seq uint64, op byte, e *Entry) []byte {
	b := wire.AppendUvarint(nil, epoch)
	b = wire.AppendUvarint(b, seq)
	b = append(b, op)
	if op == opConnect {
		return appendEntry(b, e)
	}
	return wire.AppendString(b, e.Session)
}

// encodeSnapshotLocked: epoch, seq, count, entries. t.mu must be held.
func encodeSnapshotLocked(epoch uint64, o *origin) []byte {
	b := wire.AppendUvarint(nil, epoch)
	b = wire.AppendUvarint(b, o.seq)
	b = wire.AppendUvarint(b, uint64(len(o.sessions)))
	for _, e := range o.sessions {
		b = appendEntry(b, e)
	}
	return b
}
