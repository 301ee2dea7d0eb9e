package session

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
)

// Rooms. A session joins a room when its client asks ({"type":"join"},
// allowed by its token's rooms claim) or when the backend says so (Join);
// Publish queues a frame to every member here. A session leaves a room
// when asked (its client, or Leave), and leaves all of them when it is
// evicted, disconnected (kick) or closes (leaveAll).
//
// Two places hold membership, and they agree: the session's own list of
// rooms (roomState.joined, under Session.mu), which bounds it at
// MaxRoomsPerSession and lets a closing session find its rooms; and the
// hub's index, room -> members (roomShard, under the room's shard lock),
// which Publish reads. Both change together with the room's shard lock
// held, and Session.mu taken under it (LOCKS.md).

// ErrTooManyRooms is what a join gets when the session is in
// MaxRoomsPerSession rooms already. The error returned wraps it with the
// limit: "too many rooms (max_per_session is 100)".
var ErrTooManyRooms = errors.New("too many rooms")

// errNotAllowed refuses a client's join that its token's rooms claim does
// not allow. Its text is what the client is told.
var errNotAllowed = errors.New("not allowed")

// RoomResult is the outcome of Join or Leave for one session.
type RoomResult struct {
	Device  string
	Session string
	Err     error // nil: done, and the session was sent joined (left)
}

// RoomMember is a session in a room.
type RoomMember struct {
	User, Device, Session string
}

// roomState is a session's rooms: what it is in and what its token lets
// it join. Guarded by Session.mu. A session has none (Session.rooms nil)
// until it joins a room or while its token allows none, so an idle
// session in no room costs nothing for rooms.
type roomState struct {
	joined  []string // rooms it is in, at most MaxRoomsPerSession
	allowed []string // its token's rooms claim (roomAllowed)
}

// roomShard is one of the room index's parts: the rooms whose names hash
// to it. The index is sharded, like the registry, rather than under one
// RWMutex: Observer.RoomChanged is called with the room's lock held and
// takes the cluster table's lock, so with one lock every join and leave of
// the node (a mass disconnect leaves thousands at once) would queue behind
// each other and behind every Publish copying a member list; with 64,
// only those of rooms sharing a shard do.
type roomShard struct {
	mu    sync.RWMutex
	rooms map[string]*roomMembers // room -> its members here; no empty ones
}

// roomMembers are a room's members here: a list Publish copies in one
// go, and each member's place in it, so a member leaves in O(1) (the last
// one takes its place).
type roomMembers struct {
	list []*Session
	at   map[*Session]int
}

func (h *Hub) roomShard(room string) *roomShard {
	return &h.rooms[maphash.String(h.seed, room)%uint64(len(h.rooms))]
}

// addLocked adds s to room and returns the members now; rs.mu must be
// held (write), and s must not be a member already.
func (rs *roomShard) addLocked(room string, s *Session) int {
	m := rs.rooms[room]
	if m == nil {
		m = &roomMembers{at: map[*Session]int{}}
		rs.rooms[room] = m
	}
	m.at[s] = len(m.list)
	m.list = append(m.list, s)
	return len(m.list)
}

// removeLocked takes s out of room and returns the members left; ok is
// false if s was not a member. rs.mu must be held (write).
func (rs *roomShard) removeLocked(room string, s *Session) (n int, ok bool) {
	m := rs.rooms[room]
	if m == nil {
		return 0, false
	}
	i, ok := m.at[s]
	if !ok {
		return len(m.list), false
	}
	last := len(m.list) - 1
	m.list[i] = m.list[last]
	m.at[m.list[i]] = i
	m.list[last] = nil
	m.list = m.list[:last]
	delete(m.at, s)
	switch {
	case last == 0:
		delete(rs.rooms, room)
	case cap(m.list) > 64 && last < cap(m.list)/4: // a big room emptied: give the memory back
		m.list = slices.Clip(slices.Clone(m.list))
	}
	return last, true
}

// roomChangedRoomLocked tells the Observer that room has n members here
// now; the room's shard lock must be held (write), so that the calls for
// one room come in the order of the changes.
func (h *Hub) roomChangedRoomLocked(room string, n int) {
	if h.cfg.Observer != nil {
		h.cfg.Observer.RoomChanged(room, n)
	}
}

// tooManyRooms is ErrTooManyRooms with the limit in force.
func tooManyRooms(limit int) error {
	return fmt.Errorf("%w (max_per_session is %d)", ErrTooManyRooms, limit)
}

// join puts s in room and queues it {"type":"joined"}; a member already
// is answered joined too, and nothing changes. byClient: the client asked,
// so its token's rooms claim must allow room (errNotAllowed). Other
// errors: ErrTooManyRooms (wrapped), ErrClosed (s is closing: it joins
// nothing), ErrSlowConsumer (s joined, but its queue was full for the
// answer: it is closing with 4002). room must be valid. It never blocks
// on a client.
func (h *Hub) join(s *Session, room string, byClient bool) error {
	rs := h.roomShard(room)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	added, err := s.addRoom(room, byClient, h.cfg.MaxRoomsPerSession)
	if added {
		h.roomChangedRoomLocked(room, rs.addLocked(room, s))
	}
	return err
}

// addRoom adds room to s's list and queues the joined frame, both under
// s.mu, for join, which holds the room's shard lock; limit is
// MaxRoomsPerSession. added is false if s was a member already or is
// refused (err says why).
func (s *Session) addRoom(room string, byClient bool, limit int) (added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return false, ErrClosed
	}
	r := s.rooms
	if r == nil || !slices.Contains(r.joined, room) {
		switch {
		case byClient && (r == nil || !roomAllowed(r.allowed, room)):
			return false, errNotAllowed
		case r != nil && len(r.joined) >= limit:
			return false, tooManyRooms(limit)
		case r == nil:
			r = &roomState{}
			s.rooms = r
		}
		r.joined = append(r.joined, room)
		added = true
	}
	return added, s.enqueueLocked(roomFrame("joined", room))
}

// leave takes s out of room, if it is in it, and queues it
// {"type":"left"} either way. Errors: ErrClosed (s is closing; it leaves
// its rooms then anyway) and ErrSlowConsumer (s left, but its queue was
// full for the answer). It never blocks on a client.
func (h *Hub) leave(s *Session, room string) error {
	rs := h.roomShard(room)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	removed, err := s.removeRoom(room)
	if removed {
		if n, ok := rs.removeLocked(room, s); ok {
			h.roomChangedRoomLocked(room, n)
		}
	}
	return err
}

// removeRoom takes room out of s's list and queues the left frame, both
// under s.mu, for leave, which holds the room's shard lock. removed is
// false if s was not in room or is closing.
func (s *Session) removeRoom(room string) (removed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return false, ErrClosed
	}
	if r := s.rooms; r != nil {
		if i := slices.Index(r.joined, room); i >= 0 {
			r.joined = slices.Delete(r.joined, i, i+1)
			s.dropRoomStateLocked()
			removed = true
		}
	}
	return removed, s.enqueueLocked(roomFrame("left", room))
}

// dropRoomStateLocked frees s's room state once it is in no room and its
// token allows none; s.mu must be held.
func (s *Session) dropRoomStateLocked() {
	if r := s.rooms; r != nil && len(r.joined) == 0 {
		if len(r.allowed) == 0 {
			s.rooms = nil
		} else {
			r.joined = nil
		}
	}
}

// setAllowedRooms replaces the rooms s's client may join itself (a new
// token's claim); the rooms it is in stay.
func (s *Session) setAllowedRooms(claim []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.rooms != nil:
		s.rooms.allowed = claim
		s.dropRoomStateLocked()
	case len(claim) > 0:
		s.rooms = &roomState{allowed: claim}
	}
}

// leaveAll takes s out of every room, for a session that is closing or
// gone: evicted, kicked or closed. It marks s closing if it is not yet (a
// connection that ended), so that no join adds it to a room afterwards.
// Safe to call more than once and concurrently with join and leave. Called
// with no hub lock held.
func (h *Hub) leaveAll(s *Session) {
	s.mu.Lock()
	if s.closing == nil {
		s.closing = &Disconnect{}
	}
	var rooms []string
	if s.rooms != nil {
		rooms = s.rooms.joined
		s.rooms = nil
	}
	s.mu.Unlock()
	for _, room := range rooms {
		rs := h.roomShard(room)
		rs.mu.Lock()
		if n, ok := rs.removeLocked(room, s); ok {
			h.roomChangedRoomLocked(room, n)
		}
		rs.mu.Unlock()
	}
}

// Join joins user's live sessions here (only device's, if device is not
// empty) to room, as if each had asked, without asking its token's rooms
// claim (the backend decides): each that joined, or was in room already,
// gets {"type":"joined","room":room}. A session in MaxRoomsPerSession
// rooms already gets nothing, and its result ErrTooManyRooms (wrapped,
// with the limit); a closing one, ErrClosed. An invalid room name
// (ValidRoom) is every session's error, and nothing changes. No sessions:
// an empty result. It never blocks on a client.
func (h *Hub) Join(user, device, room string) []RoomResult {
	return h.roomOp(user, device, room, func(s *Session) error { return h.join(s, room, false) })
}

// Leave takes user's live sessions here (only device's, if device is not
// empty) out of room, as if each had asked: each gets
// {"type":"left","room":room}, also one that was not in it. Results and
// errors as for Join.
func (h *Hub) Leave(user, device, room string) []RoomResult {
	return h.roomOp(user, device, room, func(s *Session) error { return h.leave(s, room) })
}

// roomOp runs op for user's sessions (device's, if not empty).
func (h *Hub) roomOp(user, device, room string, op func(*Session) error) []RoomResult {
	list := h.sessionsOf(user, device, nil)
	if len(list) == 0 {
		return nil
	}
	bad := ValidRoom(room)
	out := make([]RoomResult, len(list))
	for i, s := range list {
		out[i] = RoomResult{Device: s.info.Device, Session: s.info.Session, Err: bad}
		if bad == nil {
			out[i].Err = h.queued(s, op(s))
		}
	}
	return out
}

// Publish queues frame to every member of room here and returns how many
// took it. A member whose queue is full is closed with 4002, like any slow
// consumer; nobody waits for it. Frames published one after another reach
// each member in that order. frame must not be modified afterwards (build
// it once: RoomMessageFrame). It never blocks on a client.
func (h *Hub) Publish(room string, frame []byte) int {
	rs := h.roomShard(room)
	rs.mu.RLock()
	var members []*Session
	if m := rs.rooms[room]; m != nil {
		members = slices.Clone(m.list)
	}
	rs.mu.RUnlock()
	return h.deliverAll(members, frame)
}

// Broadcast queues frame to every live session here and returns how many
// took it; as Publish otherwise.
func (h *Hub) Broadcast(frame []byte) int {
	return h.deliverAll(h.allSessions(), frame)
}

// deliverAll queues frame to each of list and counts those that took it.
func (h *Hub) deliverAll(list []*Session, frame []byte) int {
	n := 0
	for _, s := range list {
		if h.deliver(s, frame).Err == nil {
			n++
		}
	}
	return n
}

// RoomCount returns how many sessions here are in room.
func (h *Hub) RoomCount(room string) int {
	rs := h.roomShard(room)
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	if m := rs.rooms[room]; m != nil {
		return len(m.list)
	}
	return 0
}

// RoomMembers returns how many sessions here are in room, and at most
// limit of them, in no particular order.
func (h *Hub) RoomMembers(room string, limit int) (total int, members []RoomMember) {
	rs := h.roomShard(room)
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	m := rs.rooms[room]
	if m == nil {
		return 0, nil
	}
	n := min(max(limit, 0), len(m.list))
	if n > 0 {
		members = make([]RoomMember, n)
		for i, s := range m.list[:n] {
			members[i] = RoomMember{User: s.info.User, Device: s.info.Device, Session: s.info.Session}
		}
	}
	return len(m.list), members
}
