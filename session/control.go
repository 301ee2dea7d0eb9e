package session

import (
	"errors"
	"slices"
)

// DeliverSession queues frame to user's session with that id, and says
// what happened; ok is false if user has no such session here. It never
// blocks on a client.
func (h *Hub) DeliverSession(user, session string, frame []byte) (d Delivery, ok bool) {
	sh := h.shard(user)
	sh.mu.RLock()
	i := slices.IndexFunc(sh.users[user], func(s *Session) bool { return s.info.Session == session })
	var s *Session
	if i >= 0 {
		s = sh.users[user][i]
	}
	sh.mu.RUnlock()
	if s == nil {
		return Delivery{}, false
	}
	return h.deliver(s, frame), true
}

// deliver queues frame to s.
func (h *Hub) deliver(s *Session, frame []byte) Delivery {
	return Delivery{Device: s.info.Device, Session: s.info.Session, Err: h.queued(s, s.Enqueue(frame))}
}

// queued returns err, what queueing a frame to s gave, after counting and
// logging a slow consumer (ErrSlowConsumer: s is closing with 4002).
func (h *Hub) queued(s *Session, err error) error {
	if errors.Is(err, ErrSlowConsumer) {
		h.stats.slowConsumers.Add(1)
		h.log.Warn("session send queue full, closing", append(s.identity(), "queue", h.cfg.SendQueue)...)
	}
	return err
}

// Kicked is a session Disconnect closed.
type Kicked struct {
	Device  string
	Session string
}

// Disconnect closes user's sessions here (only device's, if device is not
// empty) with 4003 and reason, cut to MaxReasonBytes, after what is
// queued for them, and returns them. They leave the registry at once, so
// Deliver no longer reaches them. None: an empty result. It never blocks
// on a client.
func (h *Hub) Disconnect(user, device, reason string) []Kicked {
	return h.kick(user, reason, func(s *Session) bool { return device == "" || s.info.Device == device })
}

// DisconnectSession is Disconnect for user's session with that id; ok is
// false if user has no such session here.
func (h *Hub) DisconnectSession(user, session, reason string) (k Kicked, ok bool) {
	out := h.kick(user, reason, func(s *Session) bool { return s.info.Session == session })
	if len(out) == 0 {
		return Kicked{}, false
	}
	return out[0], true
}

// kick takes user's sessions that match out of the registry and closes
// them with 4003.
func (h *Hub) kick(user, reason string, match func(*Session) bool) []Kicked {
	dc := Disconnect{CloseKicked, clipReason(reason)}
	sh := h.shard(user)
	sh.mu.Lock()
	var gone []*Session
	kept := sh.users[user][:0]
	for _, s := range sh.users[user] {
		if match(s) {
			gone = append(gone, s)
		} else {
			kept = append(kept, s)
		}
	}
	if len(gone) > 0 {
		clear(sh.users[user][len(kept):])
		if len(kept) == 0 {
			delete(sh.users, user)
		} else {
			sh.users[user] = kept
		}
	}
	sh.mu.Unlock()
	h.count.Add(-int64(len(gone)))
	out := make([]Kicked, 0, len(gone))
	for _, s := range gone {
		out = append(out, Kicked{Device: s.info.Device, Session: s.info.Session})
		if s.closeFirst(dc) {
			h.stats.kicked.Add(1)
			h.log.Info("session disconnected by the backend: closing with 4003", append(s.identity(), "reason", dc.Reason)...)
		}
		h.leaveAll(s) // after the close: leaveAll marks s closing
	}
	return out
}

// clipReason cuts a close reason to at most MaxReasonBytes, at a UTF-8
// character boundary.
func clipReason(r string) string {
	if len(r) <= MaxReasonBytes {
		return r
	}
	i := MaxReasonBytes
	for i > 0 && r[i]&0xC0 == 0x80 { // r[i] continues a character: cut before it
		i--
	}
	return r[:i]
}
