package session

// SetReadHookForTest makes f run on every new session's read loop
// goroutine, before gws's ReadLoop: a test can make it panic.
func (h *Hub) SetReadHookForTest(f func(*Session)) { h.testHookRead = f }

// PendingForTest counts what s holds for its writer: queued items and owed
// control replies.
func (s *Session) PendingForTest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.queue)
	for _, b := range []bool{s.owed.ping, s.owed.pong, s.owed.wsPong} {
		if b {
			n++
		}
	}
	return n
}

// sessionForTest returns user's only session here, or nil.
func (h *Hub) sessionForTest(user string) *Session {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if list := sh.users[user]; len(list) == 1 {
		return list[0]
	}
	return nil
}
