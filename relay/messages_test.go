package relay

import (
	"bytes"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"

	"wsmesh/internal/wire"
)

// Sample messages: the round-trip cases and the fuzzers' seeds.
var (
	sampleRequests = []relayRequest{
		{},
		{Device: "web", Users: []string{"42"}, Payload: []byte(`{"type":"message","id":"x","data":1}`)},
		{Users: []string{"a", "b", "", "ü", "\xff\x00"}, Payload: []byte{}},
		{Device: strings.Repeat("d", 300), Users: []string{strings.Repeat("u", 200)}, Payload: bytes.Repeat([]byte("f"), 70000)},
		{Op: opDisconnect, Sessions: []sessionRef{{User: "42", Session: "abc"}, {}}, Payload: []byte("bye")},
		{Op: opDeliver, Users: []string{"7"}, Sessions: []sessionRef{{User: "ü", Session: "\xff"}}, Payload: []byte("{}")},
		{Op: opPublish, Room: "live:42", Payload: []byte(`{"type":"message"}`)},
		{Op: opMembers, Room: "r", Limit: 1000},
	}
	sampleReplies = []relayReply{
		{},
		{Users: [][]sessionResult{nil}},
		{Users: [][]sessionResult{{{Device: "web"}}}},
		{Users: [][]sessionResult{
			{{Device: "web", Error: "connection closing"}, {Device: "app"}},
			nil,
			{{Device: "", Error: ""}, {Device: "ü", Error: "send queue full: connection closed as a slow consumer (4002)"}},
		}},
		{Users: [][]sessionResult{{{Session: "s1", Device: "web"}}}, Sessions: []sessionResult{{Found: true, Device: "app"}, {}, {Found: true, Error: "connection closing"}}},
		{Delivered: 10000},
		{Total: 3, Members: []roomMember{{User: "u", Device: "web", Session: "s"}, {}}},
	}
)

func requestsEqual(a, b relayRequest) bool {
	return a.Op == b.Op && a.Device == b.Device && slices.Equal(a.Users, b.Users) && bytes.Equal(a.Payload, b.Payload) &&
		slices.Equal(a.Sessions, b.Sessions) && a.Room == b.Room && a.Limit == b.Limit
}

func repliesEqual(a, b relayReply) bool {
	return slices.EqualFunc(a.Users, b.Users, slices.Equal[[]sessionResult]) && slices.Equal(a.Sessions, b.Sessions) &&
		a.Delivered == b.Delivered && a.Total == b.Total && slices.Equal(a.Members, b.Members)
}

// TestRelayMessagesRoundTrip: decode(append(x)) == x, also after a prefix
// and with bytes after the message (ignored: room for later fields).
func TestRelayMessagesRoundTrip(t *testing.T) {
	for _, prefix := range [][]byte{nil, []byte("prefix")} {
		for i, m := range sampleRequests {
			b := m.append(bytes.Clone(prefix))
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("request %d: append lost the prefix", i)
			}
			for _, enc := range [][]byte{b[len(prefix):], append(b[len(prefix):len(b):len(b)], "later"...)} {
				got, err := decodeRelayRequest(enc)
				if err != nil || !requestsEqual(got, m) {
					t.Fatalf("request %d: decoded %+v, %v; want %+v", i, got, err, m)
				}
			}
		}
		for i, m := range sampleReplies {
			b := m.append(bytes.Clone(prefix))
			for _, enc := range [][]byte{b[len(prefix):], append(b[len(prefix):len(b):len(b)], 0, 1)} {
				got, err := decodeRelayReply(enc)
				if err != nil || !repliesEqual(got, m) {
					t.Fatalf("reply %d: decoded %+v, %v; want %+v", i, got, err, m)
				}
			}
		}
	}
}

// TestRelayMessagesWireFormat pins the encoding, which nodes of different
// versions must share.
func TestRelayMessagesWireFormat(t *testing.T) {
	req := relayRequest{Device: "w", Users: []string{"a", "bc"}, Payload: []byte("{}")}
	if got, want := req.append(nil), []byte("\x01w\x02\x01a\x02bc\x02{}\x00\x00\x00\x00"); !bytes.Equal(got, want) {
		t.Fatalf("request %q, want %q", got, want)
	}
	reply := relayReply{Users: [][]sessionResult{{{Device: "w", Error: "", Session: "s"}, {Device: "a", Error: "x"}}, nil}, Sessions: []sessionResult{{Found: true, Device: "d"}}}
	if got, want := reply.append(nil), []byte("\x02\x02\x01w\x00\x01s\x01a\x01x\x00\x00\x01\x01\x01d\x00\x00\x00\x00"); !bytes.Equal(got, want) {
		t.Fatalf("reply %q, want %q", got, want)
	}
}

// hostileMessages are inputs whose counts and lengths claim far more than
// they hold.
func hostileMessages() [][]byte {
	huge := []uint64{1 << 60, 1<<63 - 1, 1<<64 - 1, 1 << 31, 1 << 20}
	var out [][]byte
	for _, n := range huge {
		out = append(out,
			wire.AppendUvarint(nil, n),                              // reply users / request device length
			wire.AppendUvarint(wire.AppendString(nil, "d"), n),      // request users
			wire.AppendUvarint(wire.AppendUvarint(nil, 1), n),       // reply sessions of user 0
			wire.AppendUvarint([]byte("\x01d\x01\x01u"), n),         // request frame length
			wire.AppendUvarint(bytes.Repeat([]byte{0}, 64), n),      // a count after padding
			append(wire.AppendUvarint(nil, n), make([]byte, 64)...), // a count with room for some
		)
	}
	// Counts exactly as large as the bytes left: the most a decoder lets
	// through before it reads the items.
	out = append(out, append([]byte{0x40}, make([]byte, 0x40)...))
	out = append(out, append([]byte{0x01, 0x40}, make([]byte, 0x40)...))
	// An over-long varint, and one that overflows 64 bits.
	out = append(out, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	out = append(out, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	return out
}

// TestDecodeHostileCountsAllocateLittle: a count or length claiming 2^60
// fails the decode without allocating what it claims; what a decode
// allocates stays within a small multiple of its input.
func TestDecodeHostileCountsAllocateLittle(t *testing.T) {
	for i, b := range hostileMessages() {
		const runs = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			_, _ = decodeRelayRequest(b)
			_, _ = decodeRelayReply(b)
		}
		runtime.ReadMemStats(&after)
		perRun := (after.TotalAlloc - before.TotalAlloc) / runs
		if limit := uint64(64*len(b) + 4096); perRun > limit {
			t.Errorf("input %d (%d bytes, %x…): %d bytes allocated per decode, over %d", i, len(b), b[:min(len(b), 12)], perRun, limit)
		}
	}
}

// checkDecodedRequest checks the fuzz property of decodeRelayRequest on b.
func checkDecodedRequest(t *testing.T, b []byte) {
	m, err := decodeRelayRequest(b)
	if err != nil {
		if !errors.Is(err, wire.ErrShort) {
			t.Fatalf("%x: error %v does not wrap wire.ErrShort", b, err)
		}
		if !requestsEqual(m, relayRequest{}) {
			t.Fatalf("%x: both an error and a request %+v", b, m)
		}
		return
	}
	if len(m.Users) > len(b) || len(m.Payload) > len(b) {
		t.Fatalf("%x: %d users, %d-byte frame from %d bytes", b, len(m.Users), len(m.Payload), len(b))
	}
	enc := m.append(nil)
	if len(enc) > len(b) { // varints re-encode no longer; bytes after the message drop
		t.Fatalf("%x: re-encoded to %d bytes, longer than the input", b, len(enc))
	}
	again, err := decodeRelayRequest(enc)
	if err != nil || !requestsEqual(again, m) {
		t.Fatalf("%x: round trip gave %+v, %v; want %+v", b, again, err, m)
	}
}

// checkDecodedReply checks the fuzz property of decodeRelayReply on b.
func checkDecodedReply(t *testing.T, b []byte) {
	m, err := decodeRelayReply(b)
	if err != nil {
		if !errors.Is(err, wire.ErrShort) {
			t.Fatalf("%x: error %v does not wrap wire.ErrShort", b, err)
		}
		if m.Users != nil {
			t.Fatalf("%x: both an error and a reply %+v", b, m)
		}
		return
	}
	sessions := 0
	for _, u := range m.Users {
		sessions += len(u)
	}
	if len(m.Users) > len(b) || 2*sessions > len(b) {
		t.Fatalf("%x: %d users, %d sessions from %d bytes", b, len(m.Users), sessions, len(b))
	}
	enc := m.append(nil)
	if len(enc) > len(b) {
		t.Fatalf("%x: re-encoded to %d bytes, longer than the input", b, len(enc))
	}
	again, err := decodeRelayReply(enc)
	if err != nil || !repliesEqual(again, m) {
		t.Fatalf("%x: round trip gave %+v, %v; want %+v", b, again, err, m)
	}
}

// seeds are every sample's encoding, every truncation of it, the same with
// a byte flipped, and the hostile inputs.
func seeds(encodings [][]byte) [][]byte {
	var out [][]byte
	for _, enc := range encodings {
		if len(enc) > 4096 {
			enc = enc[:4096] // the fuzzer works on small inputs; a long frame truncated is still a seed
		}
		for n := 0; n <= len(enc) && n <= 64; n++ {
			out = append(out, enc[:n])
		}
		out = append(out, enc)
		if len(enc) > 0 {
			flipped := bytes.Clone(enc)
			flipped[0] ^= 0x80
			out = append(out, flipped)
		}
	}
	return append(out, hostileMessages()...)
}

func FuzzDecodeRelayRequest(f *testing.F) {
	var encs [][]byte
	for _, m := range sampleRequests {
		encs = append(encs, m.append(nil))
	}
	for _, m := range sampleReplies { // a reply sent where a request was expected
		encs = append(encs, m.append(nil))
	}
	for _, b := range seeds(encs) {
		f.Add(b)
	}
	f.Fuzz(checkDecodedRequest)
}

func FuzzDecodeRelayReply(f *testing.F) {
	var encs [][]byte
	for _, m := range sampleReplies {
		encs = append(encs, m.append(nil))
	}
	for _, m := range sampleRequests {
		encs = append(encs, m.append(nil))
	}
	for _, b := range seeds(encs) {
		f.Add(b)
	}
	f.Fuzz(checkDecodedReply)
}
