package relay

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

// idSource makes message ids: UUIDv7 (RFC 9562), unique cluster-wide and
// sortable by time. Within one node ids strictly increase: the 12-bit rand_a
// field is a counter within the millisecond (RFC 9562 §6.2, method 1), and a
// counter overflow borrows the next millisecond.
type idSource struct {
	mu     sync.Mutex
	lastMS int64
	seq    uint16
}

func (g *idSource) next() string {
	g.mu.Lock()
	ms := time.Now().UnixMilli()
	switch {
	case ms > g.lastMS:
		g.lastMS, g.seq = ms, 0
	case g.seq < 0xfff:
		g.seq++
	default:
		g.lastMS++
		g.seq = 0
	}
	ms, seq := g.lastMS, g.seq
	g.mu.Unlock()

	var u [16]byte
	binary.BigEndian.PutUint64(u[0:8], uint64(ms)<<16|0x7000|uint64(seq))
	_, _ = rand.Read(u[8:])
	u[8] = u[8]&0x3f | 0x80 // variant 10
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
