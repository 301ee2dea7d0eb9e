package cluster

import (
	"slices"
	"time"
)

// Located is one session as this node's copy of the table knows it.
type Located struct {
	User, Device, Session string
	Node                  string    // the node that holds it
	Connected             time.Time // when it was accepted (its login stamp's wall clock, millisecond precision)
}

func (e *Entry) located() Located {
	return Located{User: e.User, Device: e.Device, Session: e.Session, Node: e.Node, Connected: e.Stamp.Time()}
}

// Session finds the session with that id in this node's copy of the
// table, whichever node holds it; ok is false if the table has none. It
// asks no other node: a session accepted elsewhere a moment ago may not be
// here yet. Session ids are unique cluster-wide, so at most one origin
// has it; the cost is a map lookup per member.
func (c *Cluster) Session(id string) (l Located, ok bool) {
	t := c.table
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, o := range t.origins {
		if e := o.sessions[id]; e != nil {
			return e.located(), true
		}
		if e := o.stale[id]; e != nil {
			return e.located(), true
		}
	}
	return Located{}, false
}

// Sessions returns user's sessions in this node's copy of the table (only
// device's, if device is not empty), oldest first; none: nil. It asks no
// other node.
func (c *Cluster) Sessions(user, device string) []Located {
	t := c.table
	t.mu.RLock()
	var found []*Entry
	for _, e := range t.byUser[user] {
		if device == "" || e.Device == device {
			found = append(found, e)
		}
	}
	t.mu.RUnlock()
	if len(found) == 0 {
		return nil
	}
	slices.SortFunc(found, func(a, b *Entry) int {
		if newer(a, b) {
			return 1
		}
		return -1
	})
	out := make([]Located, len(found))
	for i, e := range found {
		out[i] = e.located()
	}
	return out
}
