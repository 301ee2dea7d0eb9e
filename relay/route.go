package relay

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/panics"
	"wsmesh/session"
)

// answer is what one node made of a relayRequest: its reply, or, if it
// could not be asked or did not answer, the status and reason every
// recipient sent to it gets.
type answer struct {
	reply              relayReply
	failStatus, reason string // failStatus "": reply holds the node's answer
}

// routeUsers carries out the request tmpl (its op, device, payload and
// room) for users' sessions wherever they are: here through the hub,
// elsewhere with one cluster call per node the table lists for some of
// them (all calls in parallel). It returns each user's results in the
// order of users; ok is the status of a session that took the request. A
// user with none gets one "offline" result.
func (s *Server) routeUsers(ctx context.Context, tmpl relayRequest, users []string, ok string) [][]Result {
	self := s.cfg.Cluster.Name()
	idx := map[string][]int{self: make([]int, len(users))} // node -> indexes into users; every user is tried here
	for i, u := range users {
		idx[self][i] = i
		for _, node := range s.cfg.Cluster.Owners(u) {
			if node != self {
				idx[node] = append(idx[node], i)
			}
		}
	}
	reqs := make(map[string]*relayRequest, len(idx))
	for node, is := range idx {
		req := tmpl
		req.Users = make([]string, len(is))
		for j, i := range is {
			req.Users[j] = users[i]
		}
		reqs[node] = &req
	}
	answers := s.ask(ctx, reqs)
	out := make([][]Result, len(users))
	for _, node := range nodesInOrder(answers, self) {
		a := answers[node]
		for j, i := range idx[node] {
			if a.failStatus != "" {
				out[i] = append(out[i], Result{User: users[i], Node: node, Status: a.failStatus, Error: a.reason})
				continue
			}
			for _, r := range a.reply.Users[j] {
				out[i] = append(out[i], r.result(users[i], node, ok))
			}
		}
	}
	for i, u := range users {
		if len(out[i]) == 0 {
			out[i] = []Result{{User: u, Status: StatusOffline}}
		}
	}
	return out
}

// routeSessions carries out tmpl for the sessions with those ids: each is
// looked up in this node's copy of the table and the request goes to the
// node that holds it (here, through the hub). It returns a result per id,
// in order: "offline" for an id the table does not know (gone, never
// existed, malformed) or that its node no longer holds.
func (s *Server) routeSessions(ctx context.Context, tmpl relayRequest, ids []string, ok string) []Result {
	out := make([]Result, len(ids))
	idx := map[string][]int{}
	reqs := map[string]*relayRequest{}
	for i, id := range ids {
		l, found := s.cfg.Cluster.Session(id)
		if !found {
			out[i] = Result{Session: id, Status: StatusOffline}
			continue
		}
		req := reqs[l.Node]
		if req == nil {
			req = &relayRequest{Op: tmpl.Op, Payload: tmpl.Payload, Room: tmpl.Room}
			reqs[l.Node] = req
		}
		req.Sessions = append(req.Sessions, sessionRef{User: l.User, Session: id})
		idx[l.Node] = append(idx[l.Node], i)
	}
	for node, a := range s.ask(ctx, reqs) {
		for j, i := range idx[node] {
			user := reqs[node].Sessions[j].User
			switch r := a.reply.Sessions; {
			case a.failStatus != "":
				out[i] = Result{User: user, Session: ids[i], Node: node, Status: a.failStatus, Error: a.reason}
			case !r[j].Found:
				out[i] = Result{User: user, Session: ids[i], Status: StatusOffline}
			default:
				r[j].Session = ids[i]
				out[i] = r[j].result(user, node, ok)
			}
		}
	}
	return out
}

// nodesInOrder returns the nodes answers holds: self first, then the rest
// by name, so that results come in an order that does not change from one
// call to the next.
func nodesInOrder(answers map[string]answer, self string) []string {
	nodes := slices.SortedFunc(maps.Keys(answers), func(a, b string) int {
		return cmp.Or(-cmp.Compare(boolInt(a == self), boolInt(b == self)), cmp.Compare(a, b))
	})
	return nodes
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ask sends each node its request, all in parallel, and returns each
// node's answer. This node's own request is carried out here, through the
// hub, without a call.
func (s *Server) ask(ctx context.Context, reqs map[string]*relayRequest) map[string]answer {
	self := s.cfg.Cluster.Name()
	out := make(map[string]answer, len(reqs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for node, req := range reqs {
		wg.Go(func() {
			var a answer
			defer func() {
				if v := recover(); v != nil { // a bug here must not take the process down
					s.log.Error("relay call panicked: its recipients answered error", append([]any{"node", node}, panics.Attrs(v)...)...)
					a = answer{failStatus: StatusError, reason: "internal error"}
				}
				mu.Lock()
				out[node] = a
				mu.Unlock()
			}()
			if node == self {
				a = answer{reply: s.local(req)}
			} else {
				a = s.forward(ctx, node, req)
			}
		})
	}
	wg.Wait()
	return out
}

// forward sends req to node and returns its answer. The table lists
// sessions of the recipients on node, so a node that cannot be asked or
// does not answer in time (cluster.ErrUnreachable, ErrNoAnswer;
// ErrUnknownNode: gossip dropped it a moment ago; ErrClosed: this node is
// leaving) makes each of them "unreachable", not offline. A full link
// queue and a reply that does not decode, or does not match the request,
// are errors.
func (s *Server) forward(ctx context.Context, node string, req *relayRequest) answer {
	start := time.Now()
	payload, err := s.cfg.Cluster.Call(ctx, node, req.append(nil))
	if s.cfg.OnForward != nil {
		s.cfg.OnForward(node, time.Since(start), err)
	}
	switch {
	case errors.Is(err, cluster.ErrQueueFull):
		return answer{failStatus: StatusError, reason: "relay queue to node " + node + " full"}
	case err != nil:
		s.log.Debug("owner unreachable: its recipients reported unreachable", "node", node, "users", len(req.Users), "sessions", len(req.Sessions), "err", err)
		return answer{failStatus: StatusUnreachable}
	}
	reply, err := decodeRelayReply(payload)
	if err == nil && (len(reply.Users) != len(req.Users) || len(reply.Sessions) != len(req.Sessions)) {
		err = errors.New("reply does not match the request")
	}
	if err != nil {
		s.log.Warn("malformed relay reply", "node", node, "err", err,
			"users", len(reply.Users), "want_users", len(req.Users), "sessions", len(reply.Sessions), "want_sessions", len(req.Sessions))
		return answer{failStatus: StatusError, reason: "malformed reply from node " + node}
	}
	return answer{reply: reply}
}

// local carries out req on this node's sessions, through the hub.
func (s *Server) local(req *relayRequest) relayReply {
	reply := relayReply{Users: make([][]sessionResult, len(req.Users)), Sessions: make([]sessionResult, len(req.Sessions))}
	hub := s.cfg.Hub
	for i, u := range req.Users {
		switch req.Op {
		case opDeliver:
			for _, d := range hub.Deliver(u, req.Device, req.Payload) {
				reply.Users[i] = append(reply.Users[i], deliveryResult(d))
			}
		case opDisconnect:
			for _, k := range hub.Disconnect(u, req.Device, string(req.Payload)) {
				reply.Users[i] = append(reply.Users[i], kickedResult(k))
			}
		case opJoin:
			for _, r := range hub.Join(u, req.Device, req.Room) {
				reply.Users[i] = append(reply.Users[i], roomResult(r))
			}
		case opLeave:
			for _, r := range hub.Leave(u, req.Device, req.Room) {
				reply.Users[i] = append(reply.Users[i], roomResult(r))
			}
		}
	}
	switch req.Op {
	case opPublish:
		reply.Delivered = uint64(hub.Publish(req.Room, req.Payload))
	case opBroadcast:
		reply.Delivered = uint64(hub.Broadcast(req.Payload))
	case opMembers:
		total, members := hub.RoomMembers(req.Room, int(min(req.Limit, maxMembersLimit)))
		reply.Total = uint64(total)
		reply.Members = make([]roomMember, len(members))
		for i, m := range members {
			reply.Members[i] = roomMember{User: m.User, Device: m.Device, Session: m.Session}
		}
	}
	for i, ref := range req.Sessions {
		switch req.Op {
		case opDeliver:
			if d, ok := hub.DeliverSession(ref.User, ref.Session, req.Payload); ok {
				reply.Sessions[i] = deliveryResult(d)
			}
		case opDisconnect:
			if k, ok := hub.DisconnectSession(ref.User, ref.Session, string(req.Payload)); ok {
				reply.Sessions[i] = kickedResult(k)
			}
		}
	}
	return reply
}

// HandleRelay carries out a request relayed by another node on the
// sessions here and says what happened to each; it implements
// cluster.Handler.
func (s *Server) HandleRelay(from string, payload []byte) []byte {
	req, err := decodeRelayRequest(payload)
	if err != nil {
		s.log.Warn("malformed relay request", "from", from, "err", err)
		return nil
	}
	if req.Op == opPublish || req.Op == opBroadcast {
		s.fanoutItems.Add(1)
	}
	reply := s.local(&req)
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

// RoomChanged reports this node's member count of a room to the cluster's interest table.
func (a Announcer) RoomChanged(room string, members int) { a.Cluster.SetLocalRoom(room, members) }
