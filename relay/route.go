package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/panics"
	"wsmesh/session"
)

// route delivers frame to users wherever their sessions are: here through
// the hub, elsewhere with one cluster call per owner node (all calls in
// parallel), and returns each user's results in the order of users.
func (s *Server) route(ctx context.Context, users []string, device string, frame []byte) [][]Result {
	self := s.cfg.Cluster.Name()
	out := make([][]Result, len(users))
	remote := map[string][]int{} // node -> indexes into users
	for i, u := range users {
		for _, d := range s.cfg.Hub.Deliver(u, device, frame) {
			out[i] = append(out[i], deliveryResult(d).result(u, self))
		}
		for _, node := range s.cfg.Cluster.Owners(u) {
			if node != self {
				remote[node] = append(remote[node], i)
			}
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for node, idx := range remote {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { // a bug here must not take the process down
				if v := recover(); v != nil {
					s.log.Error("forwarding panicked: its users answered error", append([]any{"node", node}, panics.Attrs(v)...)...)
					mu.Lock()
					for _, i := range idx {
						out[i] = append(out[i], Result{User: users[i], Node: node, Status: StatusError, Error: "internal error"})
					}
					mu.Unlock()
				}
			}()
			res := s.forward(ctx, node, users, idx, device, frame)
			mu.Lock()
			for j, i := range idx {
				out[i] = append(out[i], res[j]...)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i, u := range users {
		if len(out[i]) == 0 {
			out[i] = []Result{{User: u, Status: StatusOffline}}
		}
	}
	return out
}

// forward asks node to deliver frame to users[idx...] and returns what it
// said for each. The table lists sessions of theirs on node, so a node
// that cannot be asked or does not answer in time (cluster.ErrUnreachable,
// ErrNoAnswer; ErrUnknownNode: gossip dropped it a moment ago; ErrClosed:
// this node is leaving) makes each of them "unreachable", not offline. A
// full link queue and a reply that does not decode are errors.
func (s *Server) forward(ctx context.Context, node string, users []string, idx []int, device string, frame []byte) [][]Result {
	out := make([][]Result, len(idx))
	each := func(status, reason string) [][]Result {
		for j, i := range idx {
			out[j] = []Result{{User: users[i], Node: node, Status: status, Error: reason}}
		}
		return out
	}
	req := relayRequest{Device: device, Users: make([]string, len(idx)), Frame: frame}
	for j, i := range idx {
		req.Users[j] = users[i]
	}
	start := time.Now()
	payload, err := s.cfg.Cluster.Call(ctx, node, req.append(nil))
	if s.cfg.OnForward != nil {
		s.cfg.OnForward(node, time.Since(start), err)
	}
	switch {
	case errors.Is(err, cluster.ErrQueueFull):
		return each(StatusError, "relay queue to node "+node+" full")
	case err != nil:
		s.log.Debug("owner unreachable: its users reported unreachable", "node", node, "users", len(idx), "err", err)
		return each(StatusUnreachable, "")
	}
	reply, err := decodeRelayReply(payload)
	if err != nil {
		s.log.Warn("malformed relay reply", "node", node, "err", err)
		return each(StatusError, "malformed reply from node "+node)
	}
	if len(reply.Users) != len(idx) {
		s.log.Warn("malformed relay reply", "node", node, "users", len(reply.Users), "want", len(idx))
		return each(StatusError, "malformed reply from node "+node)
	}
	for j, i := range idx {
		for _, sr := range reply.Users[j] {
			out[j] = append(out[j], sr.result(users[i], node))
		}
	}
	return out
}

// HandleRelay delivers a message relayed by another node to the sessions
// here and says what happened to each; it implements cluster.Handler.
func (s *Server) HandleRelay(from string, payload []byte) []byte {
	req, err := decodeRelayRequest(payload)
	if err != nil {
		s.log.Warn("malformed relay request", "from", from, "err", err)
		return nil
	}
	reply := relayReply{Users: make([][]sessionResult, len(req.Users))}
	for i, u := range req.Users {
		for _, d := range s.cfg.Hub.Deliver(u, req.Device, req.Frame) {
			reply.Users[i] = append(reply.Users[i], deliveryResult(d))
		}
	}
	return reply.append(nil)
}

// Evict closes a local session that lost to a newer login on another
// node; it implements cluster.Handler.
func (s *Server) Evict(user, sessionID string) { s.cfg.Hub.Evict(user, sessionID) }

// Announcer reports the hub's sessions to the cluster's session table; it
// implements session.Observer.
type Announcer struct{ Cluster *cluster.Cluster }

// SessionOpened records a new local session.
func (a Announcer) SessionOpened(i session.Info) {
	a.Cluster.AddLocal(cluster.LocalSession{User: i.User, Device: i.Device, Session: i.Session, Stamp: i.Stamp})
}

// SessionClosed forgets a local session.
func (a Announcer) SessionClosed(i session.Info) { a.Cluster.RemoveLocal(i.User, i.Session) }
