package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Close codes sent to clients, with the reason text that goes with each.
// gws itself sends 1009 for an oversize frame.
const (
	CloseNormal        uint16 = 1000
	CloseTooLarge      uint16 = 1009
	CloseAbnormal      uint16 = 1006 // no close frame: the connection was lost or timed out (never sent, reported)
	CloseInternal      uint16 = 1011 // a bug in the server: it closes this connection only
	CloseServerRestart uint16 = 1012 // node shutting down: reconnect, to another node
	CloseEvicted       uint16 = 4000 // a newer login of the same user and device
	CloseUnauthorized  uint16 = 4001 // bad, missing or expired token: do not retry it
	CloseSlowConsumer  uint16 = 4002 // send queue overflowed
	CloseKicked        uint16 = 4003 // disconnected by the backend (POST /disconnect): do not reconnect by yourself
	CloseTooMany       uint16 = 4008 // more frames than session.max_client_rate allows
)

// MaxReasonBytes bounds a close reason the backend gives (POST
// /disconnect): a close frame's payload is at most 125 bytes, two of
// them the code, and the rest is kept for a margin.
const MaxReasonBytes = 120

// A Disconnect is a close code and its reason, sent when the server closes.
type Disconnect struct {
	Code   uint16
	Reason string
}

var (
	disconnectShutdown = Disconnect{CloseServerRestart, "node shutting down"}
	disconnectEvicted  = Disconnect{CloseEvicted, "evicted by a newer login"}
	disconnectSlow     = Disconnect{CloseSlowConsumer, "slow consumer: send queue full"}
	disconnectInternal = Disconnect{CloseInternal, "internal error"}
	disconnectExpired  = Disconnect{CloseUnauthorized, "token expired"}
	disconnectTooMany  = Disconnect{CloseTooMany, "too many messages"}
)

// Server-to-client control frames.
var (
	framePong    = []byte(`{"type":"pong"}`)
	frameEvicted = []byte(`{"type":"evicted","reason":"duplicate_login"}`)
)

// MessageFrame returns the frame {"type":"message","id":id,"data":data}.
// data must be valid JSON; it is copied in as it is. Build it once per
// message and hand the same slice to every recipient: it is never modified.
func MessageFrame(id string, data []byte) []byte {
	b := make([]byte, 0, len(`{"type":"message","id":,"data":}`)+len(id)+2+len(data))
	b = append(b, `{"type":"message","id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// RoomMessageFrame returns the frame
// {"type":"message","id":id,"room":room,"data":data}, what members of a
// room get for a publish. Like MessageFrame, data must be valid JSON and is
// copied in as it is; build it once and hand the same slice to every
// member: it is never modified.
func RoomMessageFrame(id, room string, data []byte) []byte {
	b := make([]byte, 0, len(`{"type":"message","id":,"room":,"data":}`)+len(id)+len(room)+4+len(data))
	b = append(b, `{"type":"message","id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"room":`...)
	b = appendJSONString(b, room)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// MaxRoomBytes is the longest room name.
const MaxRoomBytes = 200

// ValidRoom checks a room name: 1 to MaxRoomBytes bytes of printable
// ASCII (0x21-0x7E), so no spaces. The error's text is what the client
// is told: it starts "bad room name: ".
func ValidRoom(name string) error {
	switch {
	case name == "":
		return errors.New("bad room name: empty")
	case len(name) > MaxRoomBytes:
		return fmt.Errorf("bad room name: %d bytes, at most %d", len(name), MaxRoomBytes)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("bad room name: byte %d is 0x%02x; only printable ASCII (0x21-0x7E), no spaces", i, c)
		}
	}
	return nil
}

// roomFrame is {"type":typ,"room":room}: joined and left.
func roomFrame(typ, room string) []byte {
	b := make([]byte, 0, len(`{"type":"","room":""}`)+len(typ)+len(room))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","room":`...)
	b = appendJSONString(b, room)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			// json.Marshal would escape <, > and & as \u003c...: frames are
			// read by programs and people, not embedded in HTML.
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// welcomeFrame is the first frame of every accepted connection.
func welcomeFrame(node string, i Info, expires time.Time) []byte {
	b := make([]byte, 0, 96+len(i.Session)+len(node)+len(i.User)+len(i.Device))
	b = append(b, `{"type":"welcome","session":`...)
	b = appendJSONString(b, i.Session)
	b = append(b, `,"node":`...)
	b = appendJSONString(b, node)
	b = append(b, `,"user":`...)
	b = appendJSONString(b, i.User)
	b = append(b, `,"device":`...)
	b = appendJSONString(b, i.Device)
	b = append(b, `,"expires":`...)
	b = strconv.AppendInt(b, expires.Unix(), 10)
	return append(b, '}')
}

// refreshedFrame answers a refresh the session took.
func refreshedFrame(expires time.Time) []byte {
	b := append([]byte(nil), `{"type":"refreshed","expires":`...)
	b = strconv.AppendInt(b, expires.Unix(), 10)
	return append(b, '}')
}

// AckFrame tells a client that the backend accepted its message id.
func AckFrame(id string) []byte {
	b := append([]byte(nil), `{"type":"ack","id":`...)
	b = appendJSONString(b, id)
	return append(b, '}')
}

// ReplyFrame carries the backend's reply data (valid JSON) to the client
// message id.
func ReplyFrame(id string, data []byte) []byte {
	b := make([]byte, 0, 32+len(id)+len(data))
	b = append(b, `{"type":"reply","id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// ErrorFrame is errorFrame for other packages: a client request (op)
// refused without closing.
func ErrorFrame(op, id, reason string) []byte { return errorFrame(op, id, reason) }

// errorFrame answers a client request refused without closing: op is
// what the client asked (join, leave, message, refresh), id the client's
// own id for it, if it gave one.
func errorFrame(op, id, reason string) []byte {
	b := append([]byte(nil), `{"type":"error","op":`...)
	b = appendJSONString(b, op)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, reason)
	return append(b, '}')
}

// errNotObject: a client's text frame that is not a JSON object.
var errNotObject = errors.New("frame is not a JSON object")

// clientFrame is a frame a client sent: a JSON object whose "type" (exact
// case) says what it is. Field names match exactly ("Type" is not "type").
type clientFrame struct {
	Type  string
	ID    string // "id", the client's own id for the request, if a string
	Token string // "token" of a refresh
	Room  string // "room" of a join or leave

	roomNotString bool            // "room" is there but not a string: the join or leave is refused
	Data          json.RawMessage // "data" of a message, raw
}

// parseClientFrame decodes a client's text frame: its "type", and the
// fields the types that mean something use. Other fields are left alone.
func parseClientFrame(b []byte) (clientFrame, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil || fields == nil {
		return clientFrame{}, errNotObject
	}
	var f clientFrame
	raw, ok := fields["type"]
	if !ok {
		return f, errors.New(`frame has no "type"`)
	}
	if !jsonString(raw, &f.Type) {
		return clientFrame{}, errors.New(`frame's "type" is not a string`)
	}
	if raw, ok := fields["id"]; ok {
		jsonString(raw, &f.ID) // an id of another type is not echoed
	}
	if raw, ok := fields["room"]; ok && !jsonString(raw, &f.Room) {
		f.roomNotString = true
	}
	f.Data = fields["data"]
	if raw, ok := fields["token"]; ok {
		jsonString(raw, &f.Token) // not a string: no token, which a refresh refuses ("token missing")
	}
	return f, nil
}

// jsonString decodes raw into *s if it is a JSON string.
func jsonString(raw json.RawMessage, s *string) bool {
	return len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, s) == nil
}
