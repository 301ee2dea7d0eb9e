package relay

import (
	"fmt"

	"wsmesh/internal/wire"
	"wsmesh/session"
)

// The relay's node-to-node messages, carried by Cluster.Call: the entry
// node of a /send sends a relayRequest to each node that owns some of its
// recipients (forward), and that node answers with a relayReply
// (HandleRelay). Encoded with internal/wire:
//
//	relayRequest: device string, users count, each user string, frame bytes
//	relayReply:   users count, then per user a sessions count, each session
//	              device string, error string
//
// A decoder ignores bytes after the message, so a later version may append
// fields. Counts are bounded by the bytes left (wire.Reader.Count): a
// corrupt count fails the decode instead of allocating what it claims.
// Every decode error wraps wire.ErrShort.

// relayRequest asks a node to deliver Frame to Users' sessions there (only
// Device's, if Device is not empty).
type relayRequest struct {
	Device string
	Users  []string
	Frame  []byte
}

// append appends m's encoding to b.
func (m *relayRequest) append(b []byte) []byte {
	b = wire.AppendString(b, m.Device)
	b = wire.AppendUvarint(b, uint64(len(m.Users)))
	for _, u := range m.Users {
		b = wire.AppendString(b, u)
	}
	return wire.AppendBytes(b, m.Frame)
}

// decodeRelayRequest decodes what relayRequest.append wrote. The Frame it
// returns aliases b.
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
	m.Frame = r.Bytes()
	if err := r.Err(); err != nil {
		return relayRequest{}, fmt.Errorf("relay: decode relay request: %w", err)
	}
	return m, nil
}

// sessionResult is what a node did with a relayed frame for one of its
// sessions.
type sessionResult struct {
	Device string
	Error  string // "": queued for the client; else why not (errorReason)
}

// deliveryResult is d as a relayReply carries it.
func deliveryResult(d session.Delivery) sessionResult {
	r := sessionResult{Device: d.Device}
	if d.Err != nil {
		r.Error = errorReason(d.Err)
	}
	return r
}

// result is r as the /send answer reports it, for user on node.
func (r sessionResult) result(user, node string) Result {
	res := Result{User: user, Device: r.Device, Node: node, Status: StatusDelivered}
	if r.Error != "" {
		res.Status, res.Error = StatusError, r.Error
	}
	return res
}

// relayReply answers a relayRequest: Users[i] holds a result per session of
// the request's Users[i] on the answering node (none: no session there).
type relayReply struct {
	Users [][]sessionResult
}

// append appends m's encoding to b.
func (m *relayReply) append(b []byte) []byte {
	b = wire.AppendUvarint(b, uint64(len(m.Users)))
	for _, sessions := range m.Users {
		b = wire.AppendUvarint(b, uint64(len(sessions)))
		for _, s := range sessions {
			b = wire.AppendString(b, s.Device)
			b = wire.AppendString(b, s.Error)
		}
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
					m.Users[i][j] = sessionResult{Device: r.String(), Error: r.String()}
				}
			}
		}
	}
	if err := r.Err(); err != nil {
		return relayReply{}, fmt.Errorf("relay: decode relay reply: %w", err)
	}
	return m, nil
}
