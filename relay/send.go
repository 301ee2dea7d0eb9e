package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"

	"wsmesh/internal/httpx"
	"wsmesh/session"
)

// Result statuses.
const (
	StatusDelivered = "delivered" // the owning node queued it for that connection
	StatusOffline   = "offline"   // the user has no live session (on that device) in this node's table
	// StatusUnreachable: the table lists a session of the user on Node, but
	// that node could not be asked, or did not answer, in time (crashed,
	// stopped, partitioned, or gone from the cluster a moment ago).
	StatusUnreachable = "unreachable"
	StatusError       = "error" // a session was found but could not take it; see Error
)

// StatusDisconnected: /disconnect closed that session.
const StatusDisconnected = "disconnected"

// sendRequest is a /send body, decoded by decodeSend: Users or Sessions,
// never both.
type sendRequest struct {
	recipients
	Data json.RawMessage
}

// Result is the outcome for one session, or for a user or session id
// with none.
type Result struct {
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Device  string `json:"device,omitempty"`
	Node    string `json:"node,omitempty"`
	Status  string `json:"status"`
	Error   string `json:"error,omitempty"`
}

type sendResponse struct {
	ID          string   `json:"id"`
	Delivered   int      `json:"delivered"`
	Offline     int      `json:"offline"`
	Unreachable int      `json:"unreachable"`
	Failed      int      `json:"failed"`
	Results     []Result `json:"results"`
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) error {
	req, err := s.decodeSend(w, r)
	if err != nil {
		return err
	}
	id := s.ids.next()
	frame := session.MessageFrame(id, req.Data)
	resp := sendResponse{ID: id, Results: s.routeRecipients(r.Context(), relayRequest{Op: opDeliver, Payload: frame}, req.recipients, StatusDelivered)}
	resp.Delivered, resp.Offline, resp.Unreachable, resp.Failed = tally(resp.Results, StatusDelivered)
	s.sends.Add(1)
	s.delivered.Add(uint64(resp.Delivered))
	s.offline.Add(uint64(resp.Offline))
	s.unreachable.Add(uint64(resp.Unreachable))
	s.failed.Add(uint64(resp.Failed))
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("send", "id", id, "users", len(req.Users), "sessions", len(req.Sessions), "device", clip(req.Device),
			"delivered", resp.Delivered, "offline", resp.Offline, "unreachable", resp.Unreachable, "failed", resp.Failed)
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// tally counts results by status: ok (delivered, disconnected), offline,
// unreachable, and the rest (errors).
func tally(results []Result, ok string) (oks, offline, unreachable, failed int) {
	for _, res := range results {
		switch res.Status {
		case ok:
			oks++
		case StatusOffline:
			offline++
		case StatusUnreachable:
			unreachable++
		default:
			failed++
		}
	}
	return
}

func errorReason(err error) string {
	switch {
	case errors.Is(err, session.ErrSlowConsumer):
		return "send queue full: connection closed as a slow consumer (4002)"
	case errors.Is(err, session.ErrClosed):
		return "connection closing"
	}
	return err.Error()
}

// routeRecipients carries out tmpl for rc's users (with rc's device) or
// sessions and returns the results in the order asked.
func (s *Server) routeRecipients(ctx context.Context, tmpl relayRequest, rc recipients, ok string) []Result {
	if rc.Sessions != nil {
		return s.routeSessions(ctx, tmpl, rc.Sessions, ok)
	}
	tmpl.Device = rc.Device
	out := make([]Result, 0, len(rc.Users))
	for _, results := range s.routeUsers(ctx, tmpl, rc.Users, ok) {
		out = append(out, results...)
	}
	return out
}

// recipients are whom a /send or /disconnect is for: Users (only Device's
// sessions, if Device is not empty) or the sessions with the ids Sessions
// lists. Exactly one of Users and Sessions is not nil.
type recipients struct {
	Users    []string
	Device   string
	Sessions []string
}

// fields adds rc's fields to a decodeObject field map: "users",
// "sessions", "device".
func (rc *recipients) fields(m map[string]any, users, sessions **[]string) map[string]any {
	m["users"], m["sessions"], m["device"] = users, sessions, &rc.Device
	return m
}

// check sets rc from the decoded "users" and "sessions" and checks them:
// exactly one of the two, not empty, at most max entries. User ids must
// not be empty, and are deduplicated in order; session ids are taken as
// they are (an unknown or malformed one is answered "offline"), and
// deduplicated too. 400 otherwise.
func (rc *recipients) check(users, sessions *[]string, max int) error {
	switch {
	case users != nil && sessions != nil:
		return httpErrorf(http.StatusBadRequest, `both "users" and "sessions": give one of them`)
	case users == nil && sessions == nil:
		return httpErrorf(http.StatusBadRequest, `no users: give "users" (user ids) or "sessions" (session ids)`)
	case sessions != nil:
		if rc.Device != "" {
			return httpErrorf(http.StatusBadRequest, `"device" narrows "users" and does not go with "sessions": a session id names one connection already`)
		}
		if len(*sessions) == 0 {
			return httpErrorf(http.StatusBadRequest, `no sessions: "sessions" must list at least one session id`)
		}
		if len(*sessions) > max {
			return httpErrorf(http.StatusBadRequest, "too many sessions: %d (max_users_per_send is %d)", len(*sessions), max)
		}
		rc.Sessions = dedup(*sessions)
		return nil
	}
	if len(*users) == 0 {
		return httpErrorf(http.StatusBadRequest, `no users: "users" must list at least one user id`)
	}
	if len(*users) > max {
		return httpErrorf(http.StatusBadRequest, "too many users: %d (max_users_per_send is %d)", len(*users), max)
	}
	if i := slices.Index(*users, ""); i >= 0 {
		return httpErrorf(http.StatusBadRequest, "users[%d] is empty", i)
	}
	rc.Users = dedup(*users)
	return nil
}

// dedup drops repeated entries of list, in place, keeping the first of each.
func dedup(list []string) []string {
	seen := make(map[string]struct{}, len(list))
	out := list[:0]
	for _, v := range list {
		if _, dup := seen[v]; !dup {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

// decodeSend reads and checks a /send body: 413 over the size limit, 408 or
// 503 if it does not arrive (readBody), 400 for anything malformed
// (decodeObject, recipients.check). It returns data compacted.
func (s *Server) decodeSend(w http.ResponseWriter, r *http.Request) (*sendRequest, error) {
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	var req sendRequest
	var users, sessions *[]string
	if err := decodeObject(body, req.fields(map[string]any{"data": &req.Data}, &users, &sessions)); err != nil {
		return nil, err
	}
	if err := req.check(users, sessions, s.cfg.MaxUsersPerSend); err != nil {
		return nil, err
	}
	if len(req.Data) == 0 || bytes.Equal(req.Data, []byte("null")) {
		return nil, httpErrorf(http.StatusBadRequest, `no data: "data" must be a JSON value other than null`)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, req.Data); err != nil {
		return nil, httpErrorf(http.StatusBadRequest, "malformed JSON in data: %v", err)
	}
	req.Data = buf.Bytes()
	return &req, nil
}

// decodeError maps an error from reading or decoding a body to its answer:
// 413 over limit bytes, else 400.
func decodeError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return httpErrorf(http.StatusRequestEntityTooLarge, "body over %d bytes (max_body_bytes)", limit)
	case errors.Is(err, io.EOF):
		return httpErrorf(http.StatusBadRequest, "malformed JSON: empty body")
	case errors.As(err, &ute):
		return httpErrorf(http.StatusBadRequest, "malformed JSON: %q has the wrong type (got a JSON %s)", clip(ute.Field), clip(ute.Value))
	}
	return httpErrorf(http.StatusBadRequest, "malformed JSON: %s", clip(err.Error()))
}
