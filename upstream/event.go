package upstream

import (
	"encoding/json"
	"time"

	"wsmesh/session"
)

// event is one event for the backend.
type event struct {
	ID         string
	Type       string
	info       session.Info
	at         time.Time
	origin     string          // the node that held the session, if not this one (a failed node's)
	ClientID   string          // message: the client's own id, "" if none
	Data       json.RawMessage // message: compact JSON
	Code       int             // disconnect
	Reason     string          // disconnect
	DurationMS int64           // disconnect: how long the session lasted
}

// wireEvent is an event as the backend gets it.
type wireEvent struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Time       string          `json:"time"`
	Node       string          `json:"node"`
	User       string          `json:"user"`
	Device     string          `json:"device"`
	Session    string          `json:"session"`
	ClientID   string          `json:"client_id,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
	Code       int             `json:"code,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	DurationMS *int64          `json:"duration_ms,omitempty"`
}

// encodeBatch returns the body of a POST: {"events":[...]}.
func encodeBatch(node string, batch []*event) ([]byte, error) {
	out := struct {
		Events []wireEvent `json:"events"`
	}{Events: make([]wireEvent, len(batch))}
	for i, e := range batch {
		w := wireEvent{
			ID: e.ID, Type: e.Type, Time: e.at.UTC().Format(time.RFC3339Nano), Node: node,
			User: e.info.User, Device: e.info.Device, Session: e.info.Session,
			ClientID: e.ClientID, Data: e.Data, Code: e.Code, Reason: e.Reason,
		}
		if e.origin != "" {
			w.Node = e.origin
		}
		if e.Type == TypeDisconnect {
			d := e.DurationMS
			w.DurationMS = &d
		}
		out.Events[i] = w
	}
	return json.Marshal(out)
}
