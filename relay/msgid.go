package relay

import "github.com/google/uuid"

// idSource makes message ids: UUIDv7 (RFC 9562), unique cluster-wide and
// sortable by time, from github.com/google/uuid. Within one process ids
// strictly increase: the library keeps a 12-bit counter within the
// millisecond in rand_a (RFC 9562 §6.2, method 1) under its own lock, and
// a counter overflow borrows the next millisecond.
type idSource struct{}

func (idSource) next() string {
	u, err := uuid.NewV7()
	if err != nil { // only if the system's random source fails, which Go's crypto/rand never reports
		panic("relay: no random bytes for a message id: " + err.Error())
	}
	return u.String()
}
