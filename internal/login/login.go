// Package login is the rule for duplicate logins, in one place: which
// sessions compete for one slot (SameKey) and which of two competing
// sessions stays (Newer). A user holds one session per device, or one in
// all with single_device; of two that compete, the newer stays.
//
// Two packages apply it, each to what only it can see: session to the
// logins of one node, as they register (the stamp is taken under the
// registry's lock, so the login registering is always the newest there);
// cluster to logins on different nodes, by their stamps.
package login

// SameKey reports whether a session of userA on deviceA and one of userB
// on deviceB compete: the same user and device, or with singleDevice the
// same user.
func SameKey(singleDevice bool, userA, deviceA, userB, deviceB string) bool {
	return userA == userB && (singleDevice || deviceA == deviceB)
}

// Stamped is what Newer compares of a session.
type Stamped struct {
	Stamp   uint64 // hybrid logical clock reading taken when it was accepted
	Node    string // the node holding it
	Session string // its id, unique on its node
}

// Newer reports whether session a beats b: the larger stamp wins, ties
// broken by node name, then session id. No two sessions tie.
func Newer(a, b Stamped) bool {
	if a.Stamp != b.Stamp {
		return a.Stamp > b.Stamp
	}
	if a.Node != b.Node {
		return a.Node > b.Node
	}
	return a.Session > b.Session
}
