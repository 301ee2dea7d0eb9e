package session

import (
	"encoding/json"
	"errors"
)

// Close codes sent to clients, with the reason text that goes with each.
// gws itself sends 1009 for an oversize frame.
const (
	CloseNormal        uint16 = 1000
	CloseTooLarge      uint16 = 1009
	CloseInternal      uint16 = 1011 // a bug in the server: it closes this connection only
	CloseServerRestart uint16 = 1012 // node shutting down: reconnect, to another node
	CloseEvicted       uint16 = 4000 // a newer login of the same user and device
	CloseUnauthorized  uint16 = 4001 // bad, missing or expired token: do not retry it
	CloseSlowConsumer  uint16 = 4002 // send queue overflowed
)

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

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// clientFrame is a frame a client sent: a JSON object whose "type" (exact
// case) says what it is. Only "ping" means anything yet.
type clientFrame struct {
	Type string
}

// parseClientFrame decodes a client's text frame. Field names match exactly
// ("Type" is not "type"); other fields are left alone.
func parseClientFrame(b []byte) (clientFrame, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return clientFrame{}, errors.New("frame is not a JSON object")
	}
	raw, ok := fields["type"]
	if !ok {
		return clientFrame{}, errors.New(`frame has no "type"`)
	}
	var f clientFrame
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &f.Type) != nil {
		return clientFrame{}, errors.New(`frame's "type" is not a string`)
	}
	return f, nil
}

func isPing(b []byte) bool {
	f, err := parseClientFrame(b)
	return err == nil && f.Type == "ping"
}
