package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"wsmesh/internal/wire"
)

// macSize is the length of the MAC at the end of every link message:
// HMAC-SHA256 truncated to 128 bits.
const macSize = 16

// DeriveLinkKey returns HMAC-SHA256(secret, "wsmesh link key v1"): the
// Config.LinkKey that main derives from auth.jwt_secret, so that a key
// used to sign tokens is not used as is for anything else.
func DeriveLinkKey(secret []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("wsmesh link key v1"))
	return h.Sum(nil)
}

// linkAuth seals and opens link messages with the cluster's LinkKey.
// Safe for concurrent use: each call takes an HMAC state from a pool.
type linkAuth struct{ pool sync.Pool }

// macState is one reusable HMAC computation.
type macState struct {
	h   hash.Hash
	pre []byte // the receiver's name, length-prefixed
	sum [sha256.Size]byte
}

func newLinkAuth(key []byte) *linkAuth {
	key = bytes.Clone(key)
	a := &linkAuth{}
	a.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return a
}

// mac returns the MAC of msg sent to the node named to; it aliases s.
// The receiver's name is covered (not sent) so that a message captured
// on its way to one node cannot be replayed to another.
func (s *macState) mac(to string, msg []byte) []byte {
	s.h.Reset()
	s.pre = wire.AppendString(s.pre[:0], to)
	s.h.Write(s.pre)
	s.h.Write(msg)
	return s.h.Sum(s.sum[:0])[:macSize]
}

// seal appends the MAC of msg, bound for the node named to. It allocates
// nothing when msg has macSize bytes of spare capacity.
func (a *linkAuth) seal(msg []byte, to string) []byte {
	s := a.pool.Get().(*macState)
	msg = append(msg, s.mac(to, msg)...)
	a.pool.Put(s)
	return msg
}

// open checks the MAC at the end of msg, received by the node named to,
// in constant time, and returns msg without it. False: the MAC is wrong
// or msg is too short to hold one and a type byte.
func (a *linkAuth) open(msg []byte, to string) ([]byte, bool) {
	if len(msg) < 1+macSize {
		return nil, false
	}
	body, tag := msg[:len(msg)-macSize], msg[len(msg)-macSize:]
	s := a.pool.Get().(*macState)
	ok := hmac.Equal(s.mac(to, body), tag)
	a.pool.Put(s)
	return body, ok
}

// Refusal logging: at most one warning per claimed sender per
// refusalLogEvery, for at most maxRefusalSenders names at once (the rest
// share one slot: the names are the sender's to choose).
const (
	refusalLogEvery   = time.Minute
	maxRefusalSenders = 64
	maxClaimedName    = 64 // bytes of a claimed sender name that are logged
	refusalOverflow   = "\x00other"
)

// refusals rate-limits the warnings about refused link messages.
type refusals struct {
	mu   sync.Mutex // a leaf lock: nothing else is locked while it is held
	last map[string]time.Time
}

// allow reports whether a refusal from the sender claiming name may be
// logged now, and if so notes that it was.
func (r *refusals) allow(name string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]time.Time{}
	}
	if _, ok := r.last[name]; !ok && len(r.last) >= maxRefusalSenders {
		for k, t := range r.last {
			if now.Sub(t) >= refusalLogEvery {
				delete(r.last, k)
			}
		}
		if len(r.last) >= maxRefusalSenders {
			name = refusalOverflow
		}
	}
	if t, ok := r.last[name]; ok && now.Sub(t) < refusalLogEvery {
		return false
	}
	r.last[name] = now
	return true
}

// claimedSender returns the sender name a link message claims, clipped to
// maxClaimedName bytes and made valid UTF-8 for the log; "" if it has none.
func claimedSender(msg []byte) string {
	if len(msg) == 0 {
		return ""
	}
	n, k := binary.Uvarint(msg[1:])
	if k <= 0 {
		return ""
	}
	rest := msg[1+k:]
	name := rest[:min(n, uint64(len(rest)), maxClaimedName)]
	return strings.ToValidUTF8(string(name), "\uFFFD")
}

// refuse counts a link message whose MAC is missing or wrong, and warns
// about it, rate-limited per claimed sender.
func (c *Cluster) refuse(msg []byte) {
	total := c.stats.unauthenticated.Add(1)
	from := claimedSender(msg)
	if !c.refusals.allow(from, time.Now()) {
		return
	}
	typ := -1
	if len(msg) > 0 {
		typ = int(msg[0])
	}
	c.log.Warn("link message refused: MAC missing or wrong (nodes must share auth.jwt_secret)",
		"claimed_from", from, "type", typ, "len", len(msg), "refused_total", total,
		"note", "logged at most once a minute per claimed sender")
}

// sameRun reports whether a link message claiming boot epoch claimed
// comes from the run of its sender that memberlist knows, whose meta
// gives epoch known. A message of a first-release node carries no epoch
// (claimed 0) and is taken as before, so that a cluster can be upgraded
// one node at a time; every node of this release sends its epoch.
func sameRun(claimed, known uint64) bool { return claimed == known || claimed == 0 }

// refuseIdentity counts a link message (a batch or an ack) that claims to
// come from the member called from, with boot epoch claimed, when the
// member memberlist knows by that name has epoch known (in its meta):
// another process started with that name (which memberlist refuses to
// let join, but whose messages could reach us meanwhile), a run of the
// node that has ended, or one that has started and whose meta has not
// reached us yet (its sender sends again). It warns, at most once a
// minute per name and claimed epoch.
func (c *Cluster) refuseIdentity(what, from string, claimed, known uint64) {
	total := c.stats.identityRefused.Add(1)
	if !c.refusals.allow("id\x00"+from+"\x00"+strconv.FormatUint(claimed, 10), time.Now()) {
		return
	}
	addr := ""
	c.mu.Lock()
	if p := c.peers[from]; p != nil {
		p.mu.Lock()
		addr = p.node.Address()
		p.mu.Unlock()
	}
	c.mu.Unlock()
	c.log.Warn("link message refused: not from the member known by that name (another process with its node.name, or a run that ended or is not gossiped yet)",
		"kind", what, "claimed_from", from, "claimed_epoch", claimed, "member_epoch", known, "member_addr", addr,
		"refused_total", total, "note", "logged at most once a minute per claimed name and epoch")
}
