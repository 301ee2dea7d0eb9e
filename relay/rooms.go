package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"wsmesh/cluster"
	"wsmesh/internal/httpx"
	"wsmesh/session"
)

// Room statuses: a session that took a /rooms/join or /rooms/leave.
const (
	StatusJoined = "joined"
	StatusLeft   = "left"
)

// maxMembersLimit bounds GET /rooms/{room}/members?limit=.
const maxMembersLimit = 1000

// roomResult is r as a relayReply carries it.
func roomResult(r session.RoomResult) sessionResult {
	out := sessionResult{Session: r.Session, Device: r.Device, Found: true}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	return out
}

// roomMembership answers POST /rooms/join and /rooms/leave {"room",
// "users", "device": optional}: the users' live sessions, wherever they
// are, join or leave the room, and get "joined" or "left" frames as if
// they had asked. Results are per session, as /disconnect has them.
func (s *Server) roomMembership(op relayOp, ok string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := s.readBody(w, r)
		if err != nil {
			return err
		}
		var rc recipients
		var users *[]string
		var room string
		if err := decodeObject(body, map[string]any{"room": &room, "users": &users, "device": &rc.Device}); err != nil {
			return err
		}
		if err := checkRoom(room); err != nil {
			return err
		}
		if users == nil {
			return httpErrorf(http.StatusBadRequest, `no users: "users" must list at least one user id`)
		}
		if err := rc.check(users, nil, s.cfg.MaxUsersPerSend); err != nil {
			return err
		}
		resp := disconnectResponse{Results: s.routeRecipients(r.Context(), relayRequest{Op: op, Room: room}, rc, ok)}
		var n int
		n, resp.Offline, resp.Unreachable, resp.Failed = tally(resp.Results, ok)
		out := map[string]any{ok: n, "offline": resp.Offline, "unreachable": resp.Unreachable, "failed": resp.Failed, "results": resp.Results}
		httpx.WriteJSON(w, http.StatusOK, out)
		return nil
	}
}

// checkRoom answers a room name outside the rules with 400.
func checkRoom(room string) error {
	if room == "" {
		return httpErrorf(http.StatusBadRequest, `no room: "room" must name a room`)
	}
	if err := session.ValidRoom(room); err != nil {
		return httpErrorf(http.StatusBadRequest, "%s", clip(err.Error()))
	}
	return nil
}

// nodeDelivered is one node's part of a /publish or /broadcast answer.
type nodeDelivered struct {
	Node      string `json:"node"`
	Delivered int    `json:"delivered"`
}

// fanoutResponse answers POST /publish and /broadcast.
type fanoutResponse struct {
	ID          string          `json:"id"`
	Delivered   int             `json:"delivered"`
	Nodes       []nodeDelivered `json:"nodes"`
	Unreachable []string        `json:"unreachable"`
}

// handlePublish answers POST /publish {"room","data"}: one relay item to
// each node that has members in the room (this node's copy of the
// interest table says which), none to the others; each node queues the
// same frame to its members.
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var room string
	var data json.RawMessage
	if err := decodeObject(body, map[string]any{"room": &room, "data": &data}); err != nil {
		return err
	}
	if err := checkRoom(room); err != nil {
		return err
	}
	if data, err = compactData(data); err != nil {
		return err
	}
	id := s.ids.next()
	reqs := map[string]*relayRequest{}
	for _, rc := range s.cfg.Cluster.RoomNodes(room) {
		reqs[rc.Node] = &relayRequest{Op: opPublish, Room: room, Payload: session.RoomMessageFrame(id, room, data)}
	}
	resp := s.fanout(r.Context(), id, reqs)
	s.publishes.Add(1)
	s.log.Debug("publish", "id", id, "room", clip(room), "nodes", len(reqs), "delivered", resp.Delivered, "unreachable", len(resp.Unreachable))
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// handleBroadcast answers POST /broadcast {"data"}: one relay item to
// every other alive member, and the frame to every session here.
func (s *Server) handleBroadcast(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var data json.RawMessage
	if err := decodeObject(body, map[string]any{"data": &data}); err != nil {
		return err
	}
	if data, err = compactData(data); err != nil {
		return err
	}
	id := s.ids.next()
	frame := session.MessageFrame(id, data)
	reqs := map[string]*relayRequest{s.cfg.Cluster.Name(): {Op: opBroadcast, Payload: frame}}
	for _, m := range s.cfg.Cluster.Members() {
		if m.State == cluster.StateAlive || m.State == cluster.StateSuspect {
			reqs[m.Name] = &relayRequest{Op: opBroadcast, Payload: frame}
		}
	}
	resp := s.fanout(r.Context(), id, reqs)
	s.broadcasts.Add(1)
	s.log.Info("broadcast", "id", id, "nodes", len(reqs), "delivered", resp.Delivered, "unreachable", len(resp.Unreachable))
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// fanout sends each node its publish or broadcast and sums the answers.
func (s *Server) fanout(ctx context.Context, id string, reqs map[string]*relayRequest) fanoutResponse {
	resp := fanoutResponse{ID: id, Nodes: []nodeDelivered{}, Unreachable: []string{}}
	answers := s.ask(ctx, reqs)
	for _, node := range nodesInOrder(answers, s.cfg.Cluster.Name()) {
		a := answers[node]
		if a.failStatus != "" {
			resp.Unreachable = append(resp.Unreachable, node)
			continue
		}
		n := int(a.reply.Delivered)
		resp.Delivered += n
		resp.Nodes = append(resp.Nodes, nodeDelivered{Node: node, Delivered: n})
	}
	slices.Sort(resp.Unreachable)
	return resp
}

// compactData checks a body's "data" as /send does: present, not null,
// and returns it compacted.
func compactData(data json.RawMessage) (json.RawMessage, error) {
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil, httpErrorf(http.StatusBadRequest, `no data: "data" must be a JSON value other than null`)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, httpErrorf(http.StatusBadRequest, "malformed JSON in data: %v", err)
	}
	return buf.Bytes(), nil
}

// handleRoom answers GET /rooms/{room}: its member count on each node,
// from this node's copy of the interest table, without asking another
// node.
func (s *Server) handleRoom(w http.ResponseWriter, r *http.Request) error {
	room := r.PathValue("room")
	if err := checkRoom(room); err != nil {
		return err
	}
	type nodeMembers struct {
		Node    string `json:"node"`
		Members int    `json:"members"`
	}
	out := struct {
		Room    string        `json:"room"`
		Members int           `json:"members"`
		Nodes   []nodeMembers `json:"nodes"`
	}{Room: room, Nodes: []nodeMembers{}}
	for _, rc := range s.cfg.Cluster.RoomNodes(room) {
		out.Members += rc.Members
		out.Nodes = append(out.Nodes, nodeMembers{Node: rc.Node, Members: rc.Members})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// handleRoomMembers answers GET /rooms/{room}/members?limit=N (1 to
// 1000, default 100): it asks each node that has members for at most N
// of them, and answers at most N in all, with the total the nodes
// reported. A node that cannot be asked is named in "unreachable".
func (s *Server) handleRoomMembers(w http.ResponseWriter, r *http.Request) error {
	room := r.PathValue("room")
	if err := checkRoom(room); err != nil {
		return err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" || r.URL.Query().Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxMembersLimit {
			return httpErrorf(http.StatusBadRequest, "limit must be a whole number from 1 to %d, got %q", maxMembersLimit, clip(v))
		}
		limit = n
	}
	type member struct {
		User    string `json:"user"`
		Device  string `json:"device"`
		Session string `json:"session"`
		Node    string `json:"node"`
	}
	out := struct {
		Room        string   `json:"room"`
		Total       int      `json:"total"`
		Members     []member `json:"members"`
		Unreachable []string `json:"unreachable"`
	}{Room: room, Members: []member{}, Unreachable: []string{}}
	reqs := map[string]*relayRequest{}
	for _, rc := range s.cfg.Cluster.RoomNodes(room) {
		reqs[rc.Node] = &relayRequest{Op: opMembers, Room: room, Limit: uint64(limit)}
	}
	answers := s.ask(r.Context(), reqs)
	for _, node := range nodesInOrder(answers, s.cfg.Cluster.Name()) {
		a := answers[node]
		if a.failStatus != "" {
			out.Unreachable = append(out.Unreachable, node)
			continue
		}
		out.Total += int(a.reply.Total)
		for _, m := range a.reply.Members {
			if len(out.Members) < limit {
				out.Members = append(out.Members, member{User: m.User, Device: m.Device, Session: m.Session, Node: node})
			}
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}
