package session

import (
	"hash/maphash"
	"slices"
	"sync"

	"wsmesh/internal/login"
)

// shard is one of the registry's parts: the sessions of the users whose
// names hash to it.
type shard struct {
	mu    sync.RWMutex
	users map[string][]*Session // user -> live sessions, at most one per key (login.SameKey)
}

func (h *Hub) shard(user string) *shard {
	return &h.shards[maphash.String(h.seed, user)%uint64(len(h.shards))]
}

// Len returns the number of live sessions.
func (h *Hub) Len() int { return int(h.count.Load()) }

// register stamps s, adds it and evicts the sessions of its key it
// replaces (login.SameKey), if any: of two logins on this node, the one
// registering now is the newer. The stamp is taken under the shard lock,
// so on one node a later login of a user always has the larger stamp, and
// the cluster, which settles logins on different nodes by their stamps
// (login.Newer), agrees.
func (h *Hub) register(s *Session) {
	sh := h.shard(s.info.User)
	sh.mu.Lock()
	s.info.Stamp = h.cfg.Clock()
	list := sh.users[s.info.User]
	var evicted []*Session
	kept := list[:0]
	for _, old := range list {
		if login.SameKey(h.cfg.SingleDevice, old.info.User, old.info.Device, s.info.User, s.info.Device) {
			evicted = append(evicted, old)
		} else {
			kept = append(kept, old)
		}
	}
	sh.users[s.info.User] = append(kept, s)
	sh.mu.Unlock()
	h.count.Add(int64(1 - len(evicted)))

	for _, old := range evicted {
		h.evict(old, "by_session", s.info.Session, "by_remote", s.info.Remote)
	}
}

// unregister removes s if it is still registered; false if it was replaced.
func (h *Hub) unregister(s *Session) bool {
	sh := h.shard(s.info.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i := slices.Index(sh.users[s.info.User], s)
	if i < 0 {
		return false
	}
	sh.removeLocked(s.info.User, i)
	h.count.Add(-1)
	return true
}

// removeLocked takes the i-th session of user out; sh.mu must be held.
func (sh *shard) removeLocked(user string, i int) {
	if list := slices.Delete(sh.users[user], i, i+1); len(list) == 0 {
		delete(sh.users, user)
	} else {
		sh.users[user] = list
	}
}

// Evict closes user's session with that id as a duplicate login (the
// "evicted" frame, then 4000): the cluster found a newer login of its key
// on another node. It takes the session out of the registry at once, so
// Deliver no longer reaches it. It reports whether this call evicted it,
// and only then counts the eviction and logs it: a second call for the
// same session, or a call for one that is gone, replaced or closing for
// another reason, does nothing and returns false. Safe to call
// concurrently; it never blocks on a client.
func (h *Hub) Evict(user, session string) bool {
	sh := h.shard(user)
	sh.mu.Lock()
	i := slices.IndexFunc(sh.users[user], func(s *Session) bool { return s.info.Session == session })
	if i < 0 {
		sh.mu.Unlock()
		return false
	}
	s := sh.users[user][i]
	sh.removeLocked(user, i)
	sh.mu.Unlock()
	h.count.Add(-1)
	return h.evict(s, "by", "a newer login on another node")
}

// evict evicts s, taken out of the registry already, and counts and logs
// it, with by saying who won, unless s was closing already. s leaves its
// rooms either way.
func (h *Hub) evict(s *Session, by ...any) bool {
	evicted := s.evict()
	h.leaveAll(s) // after s.evict: leaveAll marks s closing
	if !evicted {
		return false
	}
	h.stats.evictions.Add(1)
	h.log.Info("session evicted", append(s.identity(), by...)...)
	return true
}

// Delivery is the outcome of handing a frame to one session.
type Delivery struct {
	Device  string
	Session string
	Err     error // nil: queued for the client
}

// Deliver queues frame to user's sessions (only device's, if device is not
// empty) and says what happened to each. No sessions: an empty result.
// It never blocks on a client.
func (h *Hub) Deliver(user, device string, frame []byte) []Delivery {
	var targets [4]*Session
	list := h.sessionsOf(user, device, targets[:0])
	if len(list) == 0 {
		return nil
	}
	out := make([]Delivery, len(list))
	for i, s := range list {
		out[i] = h.deliver(s, frame)
	}
	return out
}

// sessionsOf appends user's live sessions here (only device's, if device
// is not empty) to list and returns it.
func (h *Hub) sessionsOf(user, device string, list []*Session) []*Session {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.users[user] {
		if device == "" || s.info.Device == device {
			list = append(list, s)
		}
	}
	return list
}

// allSessions returns every live session here, one shard at a time (a
// session registered meanwhile in a shard already read is missed).
func (h *Hub) allSessions() []*Session {
	all := make([]*Session, 0, h.Len())
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, list := range sh.users {
			all = append(all, list...)
		}
		sh.mu.RUnlock()
	}
	return all
}
