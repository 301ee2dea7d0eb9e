package relay

import (
	"fmt"

	"wsmesh/internal/wire"
	"wsmesh/session"
)

// The relay's node-to-node messages, carried by Cluster.Call: the entry
// node of a /send or /disconnect sends a relayRequest to each node that
// holds some of its recipients (forward), and that node answers with a
// relayReply (HandleRelay). Encoded with internal/wire:
//
//	relayRequest: device string, users count, each user string,
//	              payload bytes, op uvarint, sessions count, each
//	              (user string, session string), room string, limit uvarint
//	relayReply:   users count, then per user a sessions count, each
//	              session (device string, error string, session string);
//	              then sessions count, each (found uvarint, device string,
//	              error string); delivered uvarint, total uvarint,
//	              members count, each (user, device, session strings)
//
// A decoder ignores bytes after the message, so a later version may append
// fields. Counts are bounded by the bytes left (wire.Reader.Count): a
// corrupt count fails the decode instead of allocating what it claims.
// Every decode error wraps wire.ErrShort.

// relayOp is what a relayRequest asks for.
type relayOp uint64

const (
	opDeliver    relayOp = iota // queue Payload, a frame, to the sessions
	opDisconnect                // close the sessions with 4003 and Payload as the reason
	opJoin                      // join Users' sessions to Room
	opLeave                     // take Users' sessions out of Room
	opPublish                   // queue Payload, a frame, to Room's members; reply Delivered
	opBroadcast                 // queue Payload, a frame, to every session; reply Delivered
	opMembers                   // list at most Limit of Room's members; reply Total and Members
	opLast       = opMembers
)

// sessionRef names a session and its user (the hub finds sessions by user).
type sessionRef struct {
	User, Session string
}

// relayRequest asks a node to deliver a frame to, or disconnect, Users'
// sessions there (only Device's, if Device is not empty), and the
// sessions Sessions names.
type relayRequest struct {
	Op       relayOp
	Device   string
	Users    []string
	Sessions []sessionRef
	Payload  []byte // opDeliver, opPublish, opBroadcast: the frame; opDisconnect: the reason
	Room     string // opJoin, opLeave, opPublish, opMembers
	Limit    uint64 // opMembers
}

// append appends m's encoding to b.
func (m *relayRequest) append(b []byte) []byte {
	b = wire.AppendString(b, m.Device)
	b = wire.AppendUvarint(b, uint64(len(m.Users)))
	for _, u := range m.Users {
		b = wire.AppendString(b, u)
	}
	b = wire.AppendBytes(b, m.Payload)
	b = wire.AppendUvarint(b, uint64(m.Op))
	b = wire.AppendUvarint(b, uint64(len(m.Sessions)))
	for _, s := range m.Sessions {
		b = wire.AppendString(b, s.User)
		b = wire.AppendString(b, s.Session)
	}
	b = wire.AppendString(b, m.Room)
	return wire.AppendUvarint(b, m.Limit)
}

// decodeRelayRequest decodes what relayRequest.append wrote. The Payload
// it returns aliases b.
func decodeRelayRequest(b []byte) (relayRequest, error) {
	r := wire.NewReader(b)
	var m relayRequest
	m.Device = r.String()
	if n := r.Count(); n > 0 {
		m.Users = make([]string, n)
		for i := range m.Users {
			m.Users[i] = r.String()
		}
	}
	m.Payload = r.Bytes()
	m.Op = relayOp(r.Uvarint())
	if n := r.Count(); n > 0 {
		m.Sessions = make([]sessionRef, n)
		for i := range m.Sessions {
			m.Sessions[i] = sessionRef{User: r.String(), Session: r.String()}
		}
	}
	m.Room = r.String()
	m.Limit = r.Uvarint()
	if err := r.Err(); err != nil {
		return relayRequest{}, fmt.Errorf("relay: decode relay request: %w", err)
	}
	if m.Op > opLast {
		return relayRequest{}, fmt.Errorf("relay: decode relay request: unknown op %d: %w", m.Op, wire.ErrShort)
	}
	return m, nil
}

// sessionResult is what a node did with a relayed frame for one of its
// sessions.
type sessionResult struct {
	Session string
	Device  string
	Error   string // "": queued for the client (or closed, for a disconnect); else why not (errorReason)
	Found   bool   // only in relayReply.Sessions: the session is here
}

// deliveryResult is d as a relayReply carries it.
func deliveryResult(d session.Delivery) sessionResult {
	r := sessionResult{Session: d.Session, Device: d.Device, Found: true}
	if d.Err != nil {
		r.Error = errorReason(d.Err)
	}
	return r
}

// kickedResult is k as a relayReply carries it.
func kickedResult(k session.Kicked) sessionResult {
	return sessionResult{Session: k.Session, Device: k.Device, Found: true}
}

// result is r as an answer reports it, for user on node: ok is the status
// of a session that took the request (delivered, disconnected).
func (r sessionResult) result(user, node, ok string) Result {
	res := Result{User: user, Session: r.Session, Device: r.Device, Node: node, Status: ok}
	if r.Error != "" {
		res.Status, res.Error = StatusError, r.Error
	}
	return res
}

// relayReply answers a relayRequest: Users[i] holds a result per session of
// the request's Users[i] on the answering node (none: no session there),
// Sessions[i] the result for the request's Sessions[i] (Found false: not
// here).
type relayReply struct {
	Users     [][]sessionResult
	Sessions  []sessionResult
	Delivered uint64       // opPublish, opBroadcast: members that took the frame
	Total     uint64       // opMembers: the room's members on the node
	Members   []roomMember // opMembers: at most the request's Limit of them
}

// roomMember is one member of a room, as opMembers lists it.
type roomMember struct {
	User, Device, Session string
}

// append appends m's encoding to b.
func (m *relayReply) append(b []byte) []byte {
	b = wire.AppendUvarint(b, uint64(len(m.Users)))
	for _, sessions := range m.Users {
		b = wire.AppendUvarint(b, uint64(len(sessions)))
		for _, s := range sessions {
			b = wire.AppendString(b, s.Device)
			b = wire.AppendString(b, s.Error)
			b = wire.AppendString(b, s.Session)
		}
	}
	b = wire.AppendUvarint(b, uint64(len(m.Sessions)))
	for _, s := range m.Sessions {
		found := uint64(0)
		if s.Found {
			found = 1
		}
		b = wire.AppendUvarint(b, found)
		b = wire.AppendString(b, s.Device)
		b = wire.AppendString(b, s.Error)
	}
	b = wire.AppendUvarint(b, m.Delivered)
	b = wire.AppendUvarint(b, m.Total)
	b = wire.AppendUvarint(b, uint64(len(m.Members)))
	for _, mb := range m.Members {
		b = wire.AppendString(b, mb.User)
		b = wire.AppendString(b, mb.Device)
		b = wire.AppendString(b, mb.Session)
	}
	return b
}

// decodeRelayReply decodes what relayReply.append wrote.
func decodeRelayReply(b []byte) (relayReply, error) {
	r := wire.NewReader(b)
	var m relayReply
	if n := r.Count(); n > 0 {
		m.Users = make([][]sessionResult, n)
		for i := range m.Users {
			if k := r.Count(); k > 0 {
				m.Users[i] = make([]sessionResult, k)
				for j := range m.Users[i] {
					m.Users[i][j] = sessionResult{Device: r.String(), Error: r.String(), Session: r.String()}
				}
			}
		}
	}
	if n := r.Count(); n > 0 {
		m.Sessions = make([]sessionResult, n)
		for i := range m.Sessions {
			m.Sessions[i] = sessionResult{Found: r.Uvarint() == 1, Device: r.String(), Error: r.String()}
		}
	}
	m.Delivered = r.Uvarint()
	m.Total = r.Uvarint()
	if n := r.Count(); n > 0 {
		m.Members = make([]roomMember, n)
		for i := range m.Members {
			m.Members[i] = roomMember{User: r.String(), Device: r.String(), Session: r.String()}
		}
	}
	if err := r.Err(); err != nil {
		return relayReply{}, fmt.Errorf("relay: decode relay reply: %w", err)
	}
	return m, nil
}
