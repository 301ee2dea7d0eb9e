package cluster

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestNewRequiresLinkKey(t *testing.T) {
	if _, err := New(Config{NodeName: "a"}); err == nil || !strings.Contains(err.Error(), "LinkKey") {
		t.Fatalf("New without a LinkKey: %v", err)
	}
}

func TestDeriveLinkKey(t *testing.T) {
	k1, k2 := DeriveLinkKey([]byte("s1")), DeriveLinkKey([]byte("s2"))
	if len(k1) != 32 || bytes.Equal(k1, k2) || !bytes.Equal(k1, DeriveLinkKey([]byte("s1"))) {
		t.Fatalf("keys %x, %x: want 32 bytes, one per secret, the same every time", k1, k2)
	}
	if bytes.Equal(k1, []byte("s1")) {
		t.Fatal("the key is the secret itself")
	}
}

func TestLinkAuthSealOpen(t *testing.T) {
	a := newLinkAuth(testLinkKey)
	msg := encodeBatch("a", 7, 1, []item{relayMsg{Payload: []byte("hello")}.item()})
	sealed := a.seal(bytes.Clone(msg), "b")
	if len(sealed) != len(msg)+macSize {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(msg)+macSize)
	}
	if body, ok := a.open(sealed, "b"); !ok || !bytes.Equal(body, msg) {
		t.Fatalf("open of a good message: %v %x", ok, body)
	}
	flipped := func(i int) []byte {
		m := bytes.Clone(sealed)
		m[i] ^= 1
		return m
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		to   string
	}{
		{"empty", nil, "b"},
		{"type byte only", []byte{byte(msgBatch)}, "b"},
		{"no MAC", msg, "b"},
		{"MAC cut short", sealed[:len(sealed)-1], "b"},
		{"type byte changed", flipped(0), "b"},
		{"body changed", flipped(len(msg) - 1), "b"},
		{"MAC changed", flipped(len(sealed) - 1), "b"},
		{"another receiver", sealed, "c"},
		{"another key", newLinkAuth(DeriveLinkKey([]byte("other"))).seal(bytes.Clone(msg), "b"), "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := a.open(tc.msg, tc.to); ok {
				t.Fatal("opened")
			}
		})
	}
}

// TestNotifyMsgRefusesBadMAC: batches and acks whose MAC is missing or
// wrong are counted and dropped before anything is read from them: a
// forged batch claiming a with a huge link id leaves b's link with a
// working, and one from an unknown node is not parked. Good ones are
// taken. The warning is logged once per claimed sender.
func TestNotifyMsgRefusesBadMAC(t *testing.T) {
	var logB syncBuffer
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, &logB)
	waitUntil(t, "a and b linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	if _, err := a.Call(context.Background(), "b", []byte("first")); err != nil {
		t.Fatal(err)
	}

	other := newLinkAuth(DeriveLinkKey([]byte("not the cluster's secret")))
	good := newLinkAuth(testLinkKey)
	items := []item{relayMsg{Payload: []byte("forged")}.item()}
	forged := encodeBatch("a", math.MaxUint64, 1, items)
	bad := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"no MAC, short", encodeBatch("a", math.MaxUint64, 1, nil)},
		{"no MAC", forged},
		{"wrong key", other.seal(bytes.Clone(forged), "b")},
		{"sealed for another node", good.seal(bytes.Clone(forged), "c")},
		{"MAC cut short", good.seal(bytes.Clone(forged), "b")[:len(forged)+macSize-1]},
		{"ack with a wrong key", other.seal(encodeAck("a", math.MaxUint64, 1, [][]byte{[]byte("fake reply")}), "b")},
		{"unknown sender, no MAC", encodeBatch("ghost", 1, 1, items)},
		{"unknown sender, wrong key", other.seal(encodeBatch("ghost", 1, 1, items), "b")},
	}
	for _, m := range bad {
		(*delegate)(b).NotifyMsg(m.msg)
	}
	// Had b taken the forged link id, it would drop every batch of a's
	// from now on: this call would time out and the delta not arrive.
	if got, err := a.Call(context.Background(), "b", []byte("after")); err != nil || string(got) != "re:a:after" {
		t.Fatalf("call after the forged messages: %q %v", got, err)
	}
	a.AddLocal(LocalSession{User: "u", Device: "web", Session: "1", Stamp: a.Now()})
	waitUntil(t, "b routes u to a", func() bool { return strings.Join(b.Owners("u"), ",") == "a" })
	b.mu.Lock()
	parked := len(b.parked)
	b.mu.Unlock()
	if parked != 0 {
		t.Fatalf("a refused batch was parked (%d senders)", parked)
	}
	if got := b.Stats().Unauthenticated; got != uint64(len(bad)) {
		t.Fatalf("Unauthenticated = %d, want %d", got, len(bad))
	}

	// One warning per claimed sender, with the hint.
	log := logB.String()
	for _, from := range []string{`claimed_from=a `, `claimed_from=ghost `, `claimed_from="" `} {
		if n := strings.Count(log, from); n != 1 {
			t.Errorf("%d warnings with %s, want 1\n%s", n, from, log)
		}
	}
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "nodes must share auth.jwt_secret") {
		t.Errorf("no warning with the hint:\n%s", log)
	}

	// A good batch from a node b has not seen join yet is parked.
	(*delegate)(b).NotifyMsg(good.seal(encodeBatch("ghost", 1, 1, items), "b"))
	b.mu.Lock()
	parked = len(b.parked["ghost"])
	b.mu.Unlock()
	if parked != 1 {
		t.Fatalf("a good batch from an unknown node: %d parked, want 1", parked)
	}
	if got := b.Stats().Unauthenticated; got != uint64(len(bad)) {
		t.Fatalf("a good batch counted as refused: %d", got)
	}
}

// TestLinkKeyMismatch: nodes with different LinkKeys (different
// auth.jwt_secret) see each other in gossip but cannot use the link,
// and the receiver says why.
func TestLinkKeyMismatch(t *testing.T) {
	var logB syncBuffer
	a, _ := testCluster(t, "a", nil, nil, nil, func(c *Config) { c.LinkKey = DeriveLinkKey([]byte("a's own secret")) })
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, &logB)
	waitUntil(t, "a and b linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	if _, err := a.Call(context.Background(), "b", []byte("x")); err == nil {
		t.Fatal("a call over a link with another key succeeded")
	}
	waitUntil(t, "b refuses a's batches", func() bool {
		return b.Stats().Unauthenticated > 0 && strings.Contains(logB.String(), "nodes must share auth.jwt_secret")
	})
}

func TestRefusalsRateLimited(t *testing.T) {
	var r refusals
	t0 := time.Unix(1000, 0)
	if !r.allow("a", t0) || r.allow("a", t0.Add(time.Second)) || !r.allow("b", t0) {
		t.Fatal("want one line per sender within a minute")
	}
	if !r.allow("a", t0.Add(refusalLogEvery)) {
		t.Fatal("no line a minute later")
	}
	// Many names: the map stays bounded, the extra names share one line.
	for i := range 10 * maxRefusalSenders {
		r.allow(fmt.Sprint("n", i), t0)
	}
	if n := len(r.last); n > maxRefusalSenders+1 {
		t.Fatalf("%d names remembered", n)
	}
	if r.allow("yet another", t0) {
		t.Fatal("a new name past the bound got its own line")
	}
	if !r.allow("yet another", t0.Add(refusalLogEvery)) {
		t.Fatal("old names are not forgotten")
	}
}

func TestClaimedSender(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		msg  []byte
		want string
	}{
		{nil, ""},
		{[]byte{byte(msgBatch)}, ""},
		{encodeBatch("n1", 1, 1, nil), "n1"},
		{encodeBatch(long, 1, 1, nil), long[:maxClaimedName]},
		{[]byte{byte(msgBatch), 100, 'a', 0xff}, "a\uFFFD"}, // length past the end, invalid UTF-8
	} {
		if got := claimedSender(tc.msg); got != tc.want {
			t.Errorf("claimedSender(%q) = %q, want %q", tc.msg, got, tc.want)
		}
	}
}

// BenchmarkLinkMAC is the cost of the MAC on a batch: seal on the sender
// (HMAC-SHA256 over the message, appended), open on the receiver.
func BenchmarkLinkMAC(b *testing.B) {
	a := newLinkAuth(testLinkKey)
	for _, size := range []int{4 << 10, 64 << 10} {
		msg := make([]byte, size, size+macSize)
		msg[0] = byte(msgBatch)
		b.Run(fmt.Sprintf("seal/size=%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				_ = a.seal(msg, "node-2")
			}
		})
		sealed := a.seal(msg, "node-2")
		b.Run(fmt.Sprintf("open/size=%dKiB", size>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, ok := a.open(sealed, "node-2"); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}
