package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

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

// sendRequest is a /send body, decoded by decodeSend.
type sendRequest struct {
	Users  []string
	Device string
	Data   json.RawMessage
}

// Result is the outcome for one session, or for a user with none.
type Result struct {
	User   string `json:"user"`
	Device string `json:"device,omitempty"`
	Node   string `json:"node,omitempty"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
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
	resp := sendResponse{ID: id, Results: make([]Result, 0, len(req.Users))}
	for _, results := range s.route(r.Context(), req.Users, req.Device, frame) {
		for _, res := range results {
			switch res.Status {
			case StatusDelivered:
				resp.Delivered++
			case StatusOffline:
				resp.Offline++
			case StatusUnreachable:
				resp.Unreachable++
			default:
				resp.Failed++
			}
			resp.Results = append(resp.Results, res)
		}
	}
	s.sends.Add(1)
	s.delivered.Add(uint64(resp.Delivered))
	s.offline.Add(uint64(resp.Offline))
	s.unreachable.Add(uint64(resp.Unreachable))
	s.failed.Add(uint64(resp.Failed))
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("send", "id", id, "users", len(req.Users), "device", clip(req.Device),
			"delivered", resp.Delivered, "offline", resp.Offline, "unreachable", resp.Unreachable, "failed", resp.Failed)
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
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

// decodeSend reads and checks a /send body: 413 over the size limit, 408 or
// 503 if it does not arrive (readBody), 400 for anything malformed
// (decodeObject). It returns users deduplicated, in order, and data
// compacted.
func (s *Server) decodeSend(w http.ResponseWriter, r *http.Request) (*sendRequest, error) {
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	var req sendRequest
	if err := decodeObject(body, map[string]any{"users": &req.Users, "device": &req.Device, "data": &req.Data}); err != nil {
		return nil, err
	}
	if len(req.Users) == 0 {
		return nil, httpErrorf(http.StatusBadRequest, `no users: "users" must list at least one user id`)
	}
	if len(req.Users) > s.cfg.MaxUsersPerSend {
		return nil, httpErrorf(http.StatusBadRequest, "too many users: %d (max_users_per_send is %d)", len(req.Users), s.cfg.MaxUsersPerSend)
	}
	seen := make(map[string]struct{}, len(req.Users))
	users := req.Users[:0]
	for i, u := range req.Users {
		if u == "" {
			return nil, httpErrorf(http.StatusBadRequest, "users[%d] is empty", i)
		}
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			users = append(users, u)
		}
	}
	req.Users = users
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
