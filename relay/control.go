package relay

import (
	"net/http"
	"time"

	"wsmesh/internal/httpx"
	"wsmesh/session"
)

// presenceSession is one session of a /presence answer.
type presenceSession struct {
	Session     string `json:"session"`
	Device      string `json:"device"`
	Node        string `json:"node"`
	ConnectedAt string `json:"connected_at"` // RFC 3339, UTC, milliseconds
}

// presenceUser is one user of a /presence answer.
type presenceUser struct {
	User     string            `json:"user"`
	Online   bool              `json:"online"`
	Sessions []presenceSession `json:"sessions"`
}

// handlePresence answers POST /presence {"users":[...]} from this node's
// copy of the cluster table, without asking another node: a session
// accepted elsewhere a moment ago may not be listed yet, and one that
// ended a moment ago may still be.
func (s *Server) handlePresence(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var users *[]string
	if err := decodeObject(body, map[string]any{"users": &users}); err != nil {
		return err
	}
	if users == nil {
		return httpErrorf(http.StatusBadRequest, `no users: "users" must list at least one user id`)
	}
	var rc recipients
	if err := rc.check(users, nil, s.cfg.MaxUsersPerSend); err != nil {
		return err
	}
	out := struct {
		Users []presenceUser `json:"users"`
	}{Users: make([]presenceUser, len(rc.Users))}
	for i, u := range rc.Users {
		found := s.cfg.Cluster.Sessions(u, "")
		p := presenceUser{User: u, Online: len(found) > 0, Sessions: make([]presenceSession, len(found))}
		for j, l := range found {
			p.Sessions[j] = presenceSession{Session: l.Session, Device: l.Device, Node: l.Node,
				ConnectedAt: l.Connected.UTC().Format(time.RFC3339Nano)}
		}
		out.Users[i] = p
	}
	s.presence.Add(1)
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// disconnectResponse answers POST /disconnect.
type disconnectResponse struct {
	Disconnected int      `json:"disconnected"`
	Offline      int      `json:"offline"`
	Unreachable  int      `json:"unreachable"`
	Failed       int      `json:"failed"`
	Results      []Result `json:"results"`
}

// handleDisconnect answers POST /disconnect {"users":[...], "device":
// optional, "reason": optional} or {"sessions":[...], "reason": ...}: the
// sessions named are closed with 4003 and the reason wherever they are,
// and each gets a result ("disconnected", or "offline", "unreachable",
// "error" as /send has them).
func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var rc recipients
	var users, sessions *[]string
	reason := "disconnected by the server"
	if err := decodeObject(body, rc.fields(map[string]any{"reason": &reason}, &users, &sessions)); err != nil {
		return err
	}
	if err := rc.check(users, sessions, s.cfg.MaxUsersPerSend); err != nil {
		return err
	}
	if len(reason) > session.MaxReasonBytes {
		return httpErrorf(http.StatusBadRequest, `reason too long: %d bytes (a close reason holds at most %d)`, len(reason), session.MaxReasonBytes)
	}
	resp := disconnectResponse{Results: s.routeRecipients(r.Context(), relayRequest{Op: opDisconnect, Payload: []byte(reason)}, rc, StatusDisconnected)}
	resp.Disconnected, resp.Offline, resp.Unreachable, resp.Failed = tally(resp.Results, StatusDisconnected)
	s.disconnected.Add(uint64(resp.Disconnected))
	s.log.Info("disconnect", "users", len(rc.Users), "sessions", len(rc.Sessions), "device", clip(rc.Device), "reason", clip(reason),
		"disconnected", resp.Disconnected, "offline", resp.Offline, "unreachable", resp.Unreachable, "failed", resp.Failed)
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}
