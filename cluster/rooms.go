package cluster

import (
	"slices"
	"strings"
)

// Room interest: each node announces its member count of every room it
// has members in, as deltas numbered with its session deltas (opRoom) and
// in its snapshots, so that every node knows which nodes a room's
// publishes must reach without asking anyone: the nodes with members, and
// none of the others. A node's rooms vanish with it when it leaves or is
// declared dead (table.dropLocked).

// setRoom sets the origin's member count of room; 0 forgets the room.
// table.mu must be held (write).
func (o *origin) setRoom(room string, members int) {
	if members <= 0 {
		delete(o.rooms, room)
		return
	}
	if o.rooms == nil {
		o.rooms = map[string]int{}
	}
	o.rooms[room] = members
}

// SetLocalRoom records this node's member count of room (0: no member
// left here) and announces it to every peer, in order with this node's
// session deltas. The session hub calls it for every change of a room's
// count, in the order of the changes; a count equal to the one recorded
// is not announced again.
func (c *Cluster) SetLocalRoom(room string, members int) {
	t := c.table
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.origins[c.cfg.NodeName]
	before := o.rooms[room]
	if before == max(members, 0) {
		return
	}
	o.setRoom(room, members)
	o.seq++
	first := before == 0 // publishes must now come here: no lingering
	c.announceTableLocked(deltaMsg{Epoch: c.epoch, Seq: o.seq, Op: opRoom, Room: RoomCount{Room: room, Members: max(members, 0)}}.item(), first)
}

// RoomNodes returns the nodes that have members in room, as this node's
// table knows them (this node included), by node name; none: nil. It
// asks no other node: a join on another node a moment ago may not be
// counted yet.
func (c *Cluster) RoomNodes(room string) []RoomCount {
	t := c.table
	t.mu.RLock()
	var out []RoomCount
	for name, o := range t.origins {
		if n := o.rooms[room]; n > 0 {
			out = append(out, RoomCount{Room: room, Node: name, Members: n})
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b RoomCount) int { return strings.Compare(a.Node, b.Node) })
	return out
}
