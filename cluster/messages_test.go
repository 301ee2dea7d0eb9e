package cluster

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"wsmesh/internal/wire"
)

// encodeBatch returns a batch message's bytes, without a MAC.
func encodeBatch(from string, link, seq uint64, items []item) []byte {
	return (&batchMsg{header: header{From: from, Link: link, Seq: seq}, Items: items}).encode()
}

// encodeAck returns an ack message's bytes, without a MAC.
func encodeAck(from string, link, seq uint64, replies [][]byte) []byte {
	return (&ackMsg{header: header{From: from, Link: link, Seq: seq}, Replies: replies}).encode()
}

// Sample messages, as the senders build them.
var (
	sampleEntry  = &Entry{Session: "17", User: "user-42", Device: "web", Stamp: 0x1936a6c2f4e0003}
	sampleWinner = &Entry{Session: "3", User: "user-42", Device: "web", Node: "n2", Stamp: 0x1936a6c2f4e0009}
	sampleSnap   = snapshotMsg{Epoch: 1732330000123456789, Seq: 41, Entries: []*Entry{
		sampleEntry,
		{Session: "18", User: "user-7", Device: "app", Stamp: 1},
		{Session: "19", User: "", Device: "", Stamp: 0},
	}}
	sampleConnect    = deltaMsg{Epoch: 7, Seq: 42, Op: opConnect, Entry: sampleEntry}
	sampleDisconnect = deltaMsg{Epoch: 7, Seq: 43, Op: opDisconnect, Entry: &Entry{Session: "17"}}
	sampleEvict      = evictMsg{User: "user-42", Session: "17", Winner: sampleWinner}
	sampleRelay      = relayMsg{Payload: []byte("\x00relay payload: opaque here\xff")}
	sampleChunk      = snapshotMsg{Epoch: 7, Seq: 41, Index: 3, More: true, Entries: []*Entry{sampleEntry}, Rooms: []RoomCount{{Room: "live:42", Members: 3}, {Room: "", Members: 0}}}
	sampleRoom       = deltaMsg{Epoch: 7, Seq: 44, Op: opRoom, Room: RoomCount{Room: "live:42", Members: 12000}}
	sampleBatch      = &batchMsg{header: header{From: "node-1", Link: 12, Seq: 9, Epoch: 1732330000123456789}, Items: []item{
		sampleSnap.item(), sampleChunk.item(), snapshotReqMsg{Restart: true}.item(), sampleConnect.item(), sampleDisconnect.item(), sampleRoom.item(), snapshotReqMsg{}.item(),
		sampleEvict.item(), leavingMsg{}.item(), sampleRelay.item(), {Kind: 200, Body: []byte("a kind from a later version")},
	}}
	sampleAck    = &ackMsg{header: header{From: "node-2", Link: 12, Seq: 9, Epoch: 1732330000123456790}, Replies: [][]byte{{}, []byte("reply"), {}}}
	sampleDigest = digestMsg{Node: "node-1", Epoch: 1732330000123456789, Seq: 41}
)

// firstReleaseSnapshot encodes m as the first release did: the whole
// snapshot, without chunk index and flags.
func firstReleaseSnapshot(m snapshotMsg) []byte {
	b := wire.AppendUvarint(nil, m.Epoch)
	b = wire.AppendUvarint(b, m.Seq)
	b = wire.AppendUvarint(b, uint64(len(m.Entries)))
	for _, e := range m.Entries {
		b = appendEntry(b, e)
	}
	return b
}

// TestSnapshotChunks: a snapshot cut by snapshotChunk has every entry
// once, in order, then every room once, in order, in chunks numbered from
// 0 that fit the limit (but for an entry or room larger than it, alone in
// its chunk), the last one saying so.
func TestSnapshotChunks(t *testing.T) {
	var entries []*Entry
	for i := range 1000 {
		entries = append(entries, &Entry{Session: strconv.Itoa(i), User: "user-" + strconv.Itoa(i), Device: "web", Stamp: Stamp(i) << 20})
	}
	entries = append(entries, &Entry{Session: "big", User: strings.Repeat("u", 5000)})
	var rooms []RoomCount
	for i := range 300 {
		rooms = append(rooms, RoomCount{Room: "live:" + strconv.Itoa(i), Members: i + 1})
	}
	rooms = append(rooms, RoomCount{Room: strings.Repeat("r", 3000), Members: 1 << 30})
	for _, limit := range []int{1, 100, 1000, 4096, 1 << 20} {
		var got []*Entry
		var gotRooms []RoomCount
		for index, rest, restRooms := uint64(0), entries, rooms; ; index++ {
			it, n, k := snapshotChunk(7, 9, index, rest, restRooms, limit)
			if len(it.Body) > limit && n+k > 1 {
				t.Fatalf("limit %d: chunk %d of %d entries and %d rooms is %d bytes", limit, index, n, k, len(it.Body))
			}
			if k > 0 && n < len(rest) {
				t.Fatalf("limit %d: chunk %d has rooms before the last entries", limit, index)
			}
			m, err := decodeSnapshot(it.Body)
			if err != nil {
				t.Fatal(err)
			}
			if m.Epoch != 7 || m.Seq != 9 || m.Index != index || len(m.Entries) != n || len(m.Rooms) != k || m.More != (n < len(rest) || k < len(restRooms)) {
				t.Fatalf("limit %d: chunk %+v, want index %d with %d entries and %d rooms", limit, m, index, n, k)
			}
			got = append(got, m.Entries...)
			gotRooms = append(gotRooms, m.Rooms...)
			rest, restRooms = rest[n:], restRooms[k:]
			if !m.More {
				break
			}
		}
		if len(got) != len(entries) {
			t.Fatalf("limit %d: %d entries, want %d", limit, len(got), len(entries))
		}
		for i, e := range got {
			if *e != *entries[i] {
				t.Fatalf("limit %d: entry %d is %+v, want %+v", limit, i, e, entries[i])
			}
		}
		if !slices.Equal(gotRooms, rooms) {
			t.Fatalf("limit %d: rooms differ: got %d, want %d", limit, len(gotRooms), len(rooms))
		}
	}
}

// roundTrip decodes what encode made of want.
type roundTrip struct {
	name string
	want any
	got  func() (any, error)
}

// decoded adapts a decoder's result for roundTrip.
func decoded[M any](m M, err error) (any, error) { return m, err }

func TestMessagesRoundTrip(t *testing.T) {
	// Decoded byte strings are never nil: a bodiless item comes back empty.
	wantBatch := *sampleBatch
	wantBatch.Items = slices.Clone(wantBatch.Items)
	for i := range wantBatch.Items {
		if wantBatch.Items[i].Body == nil {
			wantBatch.Items[i].Body = []byte{}
		}
	}
	empty := &batchMsg{header: header{From: "a"}}
	meta := metaMsg{Epoch: 1732330000123456789}
	// A disconnect carries the session id only.
	fullDisconnect := deltaMsg{Epoch: 7, Seq: 43, Op: opDisconnect, Entry: sampleEntry}
	for _, tc := range []roundTrip{
		{"batch", &wantBatch, func() (any, error) { return decoded(decodeBatch(sampleBatch.encode())) }},
		{"empty batch", empty, func() (any, error) { return decoded(decodeBatch(empty.encode())) }},
		{"ack", sampleAck, func() (any, error) { return decoded(decodeAck(sampleAck.encode())) }},
		{"snapshot", sampleSnap, func() (any, error) { return decoded(decodeSnapshot(sampleSnap.item().Body)) }},
		{"snapshot chunk", sampleChunk, func() (any, error) { return decoded(decodeSnapshot(sampleChunk.item().Body)) }},
		{"first-release snapshot", sampleSnap, func() (any, error) { return decoded(decodeSnapshot(firstReleaseSnapshot(sampleSnap))) }},
		{"first-release batch", &batchMsg{header: header{From: "a", Link: 1, Seq: 2}}, func() (any, error) {
			return decoded(decodeBatch(encodeBatch("a", 1, 2, nil)[:len(encodeBatch("a", 1, 2, nil))-1]))
		}},
		{"restart request", snapshotReqMsg{Restart: true}, func() (any, error) {
			return decoded(decodeSnapshotReq(snapshotReqMsg{Restart: true}.item().Body))
		}},
		{"connect", sampleConnect, func() (any, error) { return decoded(decodeDelta(sampleConnect.item().Body)) }},
		{"disconnect", sampleDisconnect, func() (any, error) { return decoded(decodeDelta(fullDisconnect.item().Body)) }},
		{"room", sampleRoom, func() (any, error) { return decoded(decodeDelta(sampleRoom.item().Body)) }},
		{"evict", sampleEvict, func() (any, error) { return decoded(decodeEvict(sampleEvict.item().Body)) }},
		{"relay", sampleRelay, func() (any, error) { return decoded(decodeRelay(sampleRelay.append(nil))) }},
		{"snapshot request", snapshotReqMsg{}, func() (any, error) { return decoded(decodeSnapshotReq([]byte("later fields"))) }},
		{"leaving", leavingMsg{}, func() (any, error) { return decoded(decodeLeaving(nil)) }},
		{"digest", sampleDigest, func() (any, error) { return decoded(decodeDigest(sampleDigest.append(nil))) }},
		{"meta", meta, func() (any, error) { return decoded(decodeMeta(meta.append(nil))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.got()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded %+v, want %+v", got, tc.want)
			}
		})
	}
	if it := sampleRelay.item(); &it.Body[0] != &sampleRelay.Payload[0] {
		t.Error("a relay item copies its payload")
	}
	if it := (snapshotReqMsg{}).item(); it.Kind != kindSnapshotReq || len(it.Body) != 0 {
		t.Errorf("snapshot request item %+v", it)
	}
	if it := (leavingMsg{}).item(); it.Kind != kindLeaving || len(it.Body) != 0 {
		t.Errorf("leaving item %+v", it)
	}
	if got := metaEpoch([]byte{1, 2, 3}); got != 0 {
		t.Errorf("epoch %d from a short meta", got)
	}
}

// TestWireLayout pins the bytes: the protocol is what goes over the wire,
// and claimedSender (linkauth.go) reads the sender's name from them.
func TestWireLayout(t *testing.T) {
	b := encodeBatch("n1", 300, 2, []item{relayMsg{Payload: []byte("hi")}.item(), snapshotReqMsg{}.item()})
	want := []byte{1, 2, 'n', '1', 0xac, 0x02, 2, 2, 16, 2, 'h', 'i', 3, 0, 0} // epoch 0 last
	if !bytes.Equal(b, want) {
		t.Fatalf("batch % x, want % x", b, want)
	}
	if cap(b)-len(b) < macSize {
		t.Fatalf("no room for the MAC: len %d cap %d", len(b), cap(b))
	}
	a := encodeAck("n2", 300, 2, [][]byte{[]byte("ok"), nil})
	if want := []byte{2, 2, 'n', '2', 0xac, 0x02, 2, 2, 2, 'o', 'k', 0, 0}; !bytes.Equal(a, want) {
		t.Fatalf("ack % x, want % x", a, want)
	}
	if got := claimedSender(b); got != "n1" {
		t.Fatalf("claimedSender = %q", got)
	}
	d := deltaMsg{Epoch: 5, Seq: 6, Op: opDisconnect, Entry: &Entry{Session: "s"}}.item().Body
	if want := []byte{5, 6, 2, 1, 's'}; !bytes.Equal(d, want) {
		t.Fatalf("disconnect % x, want % x", d, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		b      []byte
		want   error
	}{
		{"batch: empty", errOnly(decodeBatch), nil, errWrongType},
		{"batch: an ack", errOnly(decodeBatch), sampleAck.encode(), errWrongType},
		{"ack: a batch", errOnly(decodeAck), sampleBatch.encode(), errWrongType},
		{"batch: type byte only", errOnly(decodeBatch), []byte{byte(msgBatch)}, wire.ErrShort},
		{"batch: item cut", errOnly(decodeBatch), sampleBatch.encode()[:40], wire.ErrShort},
		{"delta: unknown op", errOnly(decodeDelta), []byte{1, 1, 9, 1, 's'}, errUnknownOp},
		{"delta: no op", errOnly(decodeDelta), []byte{1, 1}, wire.ErrShort},
		{"evict: no winner node", errOnly(decodeEvict), sampleEvict.append(nil)[:len(sampleEvict.append(nil))-1], wire.ErrShort},
		{"snapshot: entry cut", errOnly(decodeSnapshot), sampleSnap.append(nil)[:30], wire.ErrShort},
		{"digest: no seq", errOnly(decodeDigest), sampleDigest.append(nil)[:len("node-1")+1+9], wire.ErrShort},
		{"meta: short", errOnly(decodeMeta), []byte{1, 2, 3, 4, 5, 6, 7}, wire.ErrShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.b)
			if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "cluster: decode ") {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func errOnly[M any](decode func([]byte) (M, error)) func([]byte) error {
	return func(b []byte) error { _, err := decode(b); return err }
}

// TestDecodeHugeCount: a count claiming 2^60 entries is refused without
// allocating for them, in every message that has a count.
func TestDecodeHugeCount(t *testing.T) {
	huge := wire.AppendUvarint(nil, 1<<60)
	hdr := (&header{From: "n1", Link: 1, Seq: 1}).append(nil, msgBatch)
	ackHdr := (&header{From: "n1", Link: 1, Seq: 1}).append(nil, msgAck)
	snapHdr := wire.AppendUvarint(wire.AppendUvarint(nil, 1), 1)
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		b      []byte
	}{
		{"batch", errOnly(decodeBatch), append(append(hdr, huge...), 16, 0)},
		{"ack", errOnly(decodeAck), append(append(ackHdr, huge...), 0)},
		{"snapshot", errOnly(decodeSnapshot), append(append(snapHdr, huge...), 0, 0, 0, 0)},
		{"item length", errOnly(decodeBatch), append(append(hdr, 1, 16), huge...)},
		{"string length", errOnly(decodeEvict), huge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := tc.decode(tc.b)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, wire.ErrShort) {
				t.Fatalf("err %v, want ErrShort", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<16 {
				t.Fatalf("allocated %d bytes", n)
			}
		})
	}
}

// truncations returns msgs and cuts of each: every prefix of the short
// ones, a few of the long ones.
func truncations(msgs ...[]byte) [][]byte {
	var out [][]byte
	for _, m := range msgs {
		out = append(out, m)
		step := max(1, len(m)/16)
		for n := 0; n < len(m); n += step {
			out = append(out, m[:n])
		}
	}
	return out
}

// fuzzDecode checks a decoder: any input gives a message or an error,
// never a panic, a hang or a huge allocation; what it decodes encodes back
// to the same message.
func fuzzDecode[M any](f *testing.F, seeds [][]byte, decode func([]byte) (M, error), encode func(M) []byte) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		if n := room(m); n > 2*len(b) {
			t.Fatalf("%d bytes decoded into a message with room for %d elements", len(b), n)
		}
		again, err := decode(encode(m))
		if err != nil {
			t.Fatalf("decode(encode(decode(%x))): %v", b, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("decode(encode(m)) = %+v, want m = %+v (input %x)", again, m, b)
		}
	})
}

// room returns how many elements the slices of a decoded message have
// room for: a decoder allocates in proportion to its input, whatever
// count the input claims. (Strings and byte strings are copies or
// subslices of the input.) A batch's items may reuse a released batch's
// larger array: what matters there is how many it decoded.
func room(m any) int {
	switch m := m.(type) {
	case *batchMsg:
		return len(m.Items)
	case *ackMsg:
		return cap(m.Replies)
	case snapshotMsg:
		return cap(m.Entries)
	}
	return 0
}

func FuzzDecodeBatch(f *testing.F) {
	huge := append((&header{From: "n1", Link: 1, Seq: 1}).append(nil, msgBatch), wire.AppendUvarint(nil, 1<<60)...)
	seeds := truncations(sampleBatch.encode(), encodeBatch("a", 1, 1, nil), huge,
		encodeBatch("n", math.MaxUint64, math.MaxUint64, []item{relayMsg{Payload: bytes.Repeat([]byte{0xff}, 300)}.item()}))
	fuzzDecode(f, seeds, decodeBatch, (*batchMsg).encode)
}

func FuzzDecodeAck(f *testing.F) {
	seeds := truncations(sampleAck.encode(), encodeAck("a", 1, 1, nil), encodeAck("a", 1, 1, [][]byte{nil, nil}))
	fuzzDecode(f, seeds, decodeAck, (*ackMsg).encode)
}

func FuzzDecodeSnapshot(f *testing.F) {
	tb := newTable("n1", false)
	tb.mu.Lock()
	o := tb.originLocked("n1")
	o.epoch, o.seq = 7, 3
	tb.addLocked(o, &Entry{Session: "1", User: "u", Device: "web", Node: "n1", Stamp: 99})
	real := tb.snapshotLocked("n1").append(nil)
	tb.mu.Unlock()
	seeds := truncations(sampleSnap.append(nil), real, snapshotMsg{}.append(nil))
	fuzzDecode(f, seeds, decodeSnapshot, func(m snapshotMsg) []byte { return m.append(nil) })
}

func FuzzDecodeDelta(f *testing.F) {
	seeds := truncations(sampleConnect.append(nil), sampleDisconnect.append(nil), []byte{1, 1, 9, 0})
	fuzzDecode(f, seeds, decodeDelta, func(m deltaMsg) []byte { return m.append(nil) })
}

func FuzzDecodeEvict(f *testing.F) {
	seeds := truncations(sampleEvict.append(nil))
	fuzzDecode(f, seeds, decodeEvict, func(m evictMsg) []byte { return m.append(nil) })
}

func FuzzDecodeDigest(f *testing.F) {
	seeds := truncations(sampleDigest.append(nil))
	fuzzDecode(f, seeds, decodeDigest, func(m digestMsg) []byte { return m.append(nil) })
}
