package cluster_test

// Link messages forged by someone who can reach a node's gossip port, sent
// over the network as memberlist user messages.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/clustertest"
	"wsmesh/internal/wire"
)

// logTap is a testing.TB whose Logf also keeps the lines (the harness
// sends node logs to Logf), so a test can look for a log line.
type logTap struct {
	testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *logTap) Logf(format string, args ...any) {
	l.TB.Helper()
	s := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	l.TB.Logf("%s", s)
}

// has reports whether a line contains every one of parts.
func (l *logTap) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// forgedBatch is a link batch (cluster's msgBatch, type byte 1) claiming
// to come from node from, on link id MaxUint64, sequence 1, with no items
// and no MAC: what an attacker who can reach the gossip port but does not
// know the JWT secret can write.
func forgedBatch(from string) []byte {
	b := []byte{1}
	b = wire.AppendString(b, from)
	b = wire.AppendUvarint(b, math.MaxUint64)
	b = wire.AppendUvarint(b, 1)
	return wire.AppendUvarint(b, 0)
}

// memberlistUserMsg is memberlist's message type for user messages.
const memberlistUserMsg = 8

// forgeUDP sends msg to the gossip address as a memberlist user message
// in one datagram (type byte, then the message).
func forgeUDP(tb testing.TB, addr string, msg []byte) {
	tb.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	pkt := append([]byte{memberlistUserMsg}, msg...)
	if _, err := conn.Write(pkt); err != nil {
		tb.Fatalf("forged datagram: %v", err)
	}
	tb.Logf("sent a forged %d-byte datagram to %s", len(pkt), addr)
}

// forgeTCP sends msg to the gossip address as a memberlist user message
// over a stream (type byte, msgpack header {"UserMsgLen": n}, the
// message), as memberlist's sendUserMsg does, and waits until the node
// closes the stream: by then it has handed msg to its delegate.
func forgeTCP(tb testing.TB, addr string, msg []byte) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, testsupport.WaitLimit)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	b := []byte{memberlistUserMsg, 0x81, 0xa0 | byte(len("UserMsgLen"))} // fixmap(1), fixstr
	b = append(b, "UserMsgLen"...)
	b = append(b, 0xce) // uint32
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	if err := conn.SetDeadline(time.Now().Add(testsupport.WaitLimit)); err != nil {
		tb.Fatal(err)
	}
	if _, err := conn.Write(b); err != nil {
		tb.Fatalf("forged stream: %v", err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		tb.Fatalf("forged stream: waiting for the node to close it: %v", err)
	}
	tb.Logf("sent a forged %d-byte stream to %s", len(b), addr)
}

// TestClusterForgedLinkMessageRefused: on a cluster without
// cluster.secret_keys, a link batch forged by someone who can reach a
// node's gossip port (claiming another node as sender, with a huge link
// id) is refused and logged; it does not stop relaying between the
// nodes in either direction.
func TestClusterForgedLinkMessageRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		forge func(testing.TB, string, []byte)
	}{
		{"udp", forgeUDP},
		{"tcp", forgeTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tap := &logTap{TB: t}
			nodes, _ := startCluster(tap, 2, 5)
			n1, n2 := nodes[0], nodes[1]
			connect(n2, "before")
			clustertest.WaitRoutable(t, clusters(nodes), "before", "t2")

			tc.forge(t, n2.Addr(), forgedBatch("t1"))
			waitRefused(t, tap, n2, "t1")

			// t1 -> t2: a session opened on t1 now reaches t2's table
			// (a delta on t1's link to t2), and a call from t2 reaches t1.
			connect(n1, "after")
			testsupport.PollUntil(t, "t2 to route the new session on t1", 5*time.Second, func() bool {
				o := n2.Owners("after")
				return len(o) == 1 && o[0] == "t1"
			})
			firstCall(t, n2, n1, "via t2")
			// t2 -> t1 and back: a call from t1 to t2 is acknowledged.
			firstCall(t, n1, n2, "via t1")
		})
	}
}

// waitRefused waits (a few seconds at most) until node n has counted and
// logged the refusal of a link message claiming to come from from.
func waitRefused(tb testing.TB, tap *logTap, n *node, from string) {
	tb.Helper()
	testsupport.PollUntil(tb, "the forged message to be refused and logged", 5*time.Second, func() bool {
		return n.Stats().Unauthenticated > 0 &&
			tap.has("node="+n.Name(), "level=WARN", "claimed_from="+from, "nodes must share auth.jwt_secret")
	})
}
