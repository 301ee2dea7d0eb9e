package relay

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/wire"
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
			out[i] = append(out[i], localResult(u, self, d))
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
					s.log.Error("forwarding panicked: its users answered error", "node", node,
						"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
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

func localResult(user, node string, d session.Delivery) Result {
	r := Result{User: user, Device: d.Device, Node: node, Status: StatusDelivered}
	if d.Err != nil {
		r.Status, r.Error = StatusError, errorReason(d.Err)
	}
	return r
}

// forward asks node to deliver frame to users[idx...] and returns what it
// said for each. A node that is gone or does not answer in time has no
// sessions as far as the caller can know: its users get no result (offline).
func (s *Server) forward(ctx context.Context, node string, users []string, idx []int, device string, frame []byte) [][]Result {
	out := make([][]Result, len(idx))
	req := wire.AppendString(nil, device)
	req = wire.AppendUvarint(req, uint64(len(idx)))
	for _, i := range idx {
		req = wire.AppendString(req, users[i])
	}
	req = wire.AppendBytes(req, frame)
	start := time.Now()
	reply, err := s.cfg.Cluster.Call(ctx, node, req)
	if s.cfg.OnForward != nil {
		s.cfg.OnForward(node, time.Since(start), err)
	}
	switch {
	case errors.Is(err, cluster.ErrQueueFull):
		for j, i := range idx {
			out[j] = []Result{{User: users[i], Node: node, Status: StatusError, Error: "relay queue to node " + node + " full"}}
		}
		return out
	case err != nil:
		s.log.Debug("owner unreachable: its users reported offline", "node", node, "users", len(idx), "err", err)
		return out
	}
	r := wire.NewReader(reply)
	if n := r.Count(); n != len(idx) {
		s.log.Warn("malformed relay reply", "node", node, "users", n, "want", len(idx))
		return out
	}
	for j, i := range idx {
		k := r.Count()
		for range k {
			res := Result{User: users[i], Device: r.String(), Node: node, Status: StatusDelivered}
			if msg := r.String(); msg != "" {
				res.Status, res.Error = StatusError, msg
			}
			out[j] = append(out[j], res)
		}
	}
	if r.Err() != nil {
		s.log.Warn("malformed relay reply", "node", node, "err", r.Err())
		return make([][]Result, len(idx))
	}
	return out
}

// HandleRelay delivers a message relayed by another node to the sessions
// here and says what happened to each; it implements cluster.Handler.
func (s *Server) HandleRelay(from string, payload []byte) []byte {
	r := wire.NewReader(payload)
	device := r.String()
	users := make([]string, r.Count())
	for i := range users {
		users[i] = r.String()
	}
	frame := r.Bytes()
	if r.Err() != nil {
		s.log.Warn("malformed relay request", "from", from, "err", r.Err())
		return nil
	}
	reply := wire.AppendUvarint(nil, uint64(len(users)))
	for _, u := range users {
		ds := s.cfg.Hub.Deliver(u, device, frame)
		reply = wire.AppendUvarint(reply, uint64(len(ds)))
		for _, d := range ds {
			reply = wire.AppendString(reply, d.Device)
			msg := ""
			if d.Err != nil {
				msg = errorReason(d.Err)
			}
			reply = wire.AppendString(reply, msg)
		}
	}
	return reply
}

// Evict closes a local session that lost to a newer login on another
// node; it implements cluster.Handler.
func (s *Server) Evict(user, sessionID string) { s.cfg.Hub.Evict(user, sessionID) }

// Announcer reports the hub's sessions to the cluster's session table; it
// implements session.Observer.
type Announcer struct{ Cluster *cluster.Cluster }

// SessionOpened records a new local session.
func (a Announcer) SessionOpened(i session.Info) {
	a.Cluster.AddLocal(cluster.LocalSession{User: i.User, Device: i.Device, Session: i.ID, Stamp: i.Stamp})
}

// SessionClosed forgets a local session.
func (a Announcer) SessionClosed(i session.Info) { a.Cluster.RemoveLocal(i.User, i.ID) }
